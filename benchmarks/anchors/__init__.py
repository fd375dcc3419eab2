"""Plain broadcast servers the gateway's fan-out is compared with, in the same harness."""
