// Two gateways per cell ([ha]): what the operator sees of a takeover, on the dashboard and
// on the station page. On a standby: who the active gateway is (a link to its page) and
// why commands are off. When this page's gateway dies (the WebSocket closes and its health
// does not answer), or says it is no longer the active one while another is: "Switching
// gateway…" at once, then the other instances' health is asked (each instance answers
// that GET from the cell's own pages) and, once another is active and ready, the page goes
// to the same path and query there. The new active's page says who took over, when, and
// how long the cell went undriven (its health's takeover record, by the database's clock).

const POLL_MS = 2000;
const PROBE_TIMEOUT_MS = 1500;
/** A takeover is news for this long (the banner can be dismissed before). */
const RECENT_MS = 15 * 60 * 1000;
const DISMISSED_KEY = "carousel-takeover-dismissed";

async function readHealth(base, timeoutMs = PROBE_TIMEOUT_MS) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const reply = await fetch(`${base}/v1/health`, {
      signal: abort.signal, cache: "no-store", credentials: "omit",
    });
    if (!reply.ok) return null;
    const body = await reply.json();
    return body && body.data && body.data.ha ? body.data.ha : null;
  } catch (_) {
    return null;  // refused, timed out, or not this cell's page
  } finally {
    clearTimeout(timer);
  }
}

const readyTakeover = (ha) => Boolean(
  ha && ha.role === "active" && ha.takeover && ha.takeover.instance === ha.instance
  && ha.takeover.ready_at);

export class Failover {
  /**
   * @param {object} options
   * @param {(key: string, values?: object) => string} options.t the page's catalogue
   * @param {() => string} options.lang the page's language (for times and numbers)
   * @param {() => boolean} options.linkDown true while the page's WebSocket is closed
   * @param {() => void} options.changed re-render what depends on ``blockReason()``
   * @param {() => boolean} [options.idle] true when reloading the page loses nothing
   */
  constructor({ t, lang, linkDown, changed, idle = () => true }) {
    this.t = t;
    this.lang = lang;
    this.linkDown = linkDown;
    this.changed = changed;
    this.idle = idle;
    // The page may fetch only from the instances its CSP named when it was served (the
    // ones known then): one registered later means a reload, while nothing is lost by it.
    this.servedWith = null;
    this.ha = null;           // this gateway's health (data.ha), as last read
    this.reachable = true;
    this.wasActive = false;   // this page has seen its gateway active
    this.switching = false;
    this.instances = new Map();  // instance -> REST base URL
    this.timer = null;
    this.seen = null;         // what the page last showed (see look())
    this.checking = false;
    this.probing = false;
    this.banner = document.querySelector("#ha-banner");
    this.news = document.querySelector("#ha-takeover");
    this.news.querySelector("button").addEventListener("click", () => this.dismiss());
  }

  start() {
    this.check();
  }

  /** Ask this gateway now (the WebSocket just closed, say), then every POLL_MS. */
  async check() {
    if (this.checking) return;
    this.checking = true;
    clearTimeout(this.timer);
    try {
      await this.look();
    } finally {
      this.checking = false;
      this.timer = setTimeout(() => this.check(), POLL_MS);
    }
  }

  async look() {
    const ha = await readHealth("", PROBE_TIMEOUT_MS * 2);
    if (ha) {
      this.reachable = true;
      this.ha = ha;
      for (const item of ha.instances || []) {
        if (item.http_url && /^https?:\/\//i.test(item.http_url)) {
          this.instances.set(item.instance, item.http_url.replace(/\/+$/, ""));
        }
      }
      const urls = [...this.instances.values()];
      if (this.servedWith === null) this.servedWith = new Set(urls);
      else if (urls.some((url) => !this.servedWith.has(url)) && this.idle()) {
        location.reload();  // a new instance of the cell: a CSP that names it
        return;
      }
      if (ha.role === "active") {
        this.wasActive = true;
        this.switching = false;
      } else if (this.wasActive) {
        // Fenced or stood down (cut off from the database, even: then it may not know
        // who took over): ask the others.
        this.switching = true;
      }
    } else {
      this.reachable = false;
      if (this.linkDown()) this.switching = true;
    }
    // Re-rendered only when something changed: the station's buttons stay the same
    // elements between polls (a click is never lost to a re-render).
    const now = this.ha || {};
    const seen = JSON.stringify([now.role, now.active_instance, now.takeover, now.instances,
      this.reachable, this.switching, Math.floor(Date.now() / 60000)]);
    if (seen !== this.seen) {
      this.seen = seen;
      this.render();
      this.changed();
    }
    if (this.switching) await this.probe();
  }

  /** The other instances: go to the first that is active and ready. */
  async probe() {
    if (this.probing) return;
    this.probing = true;
    try {
      const own = this.ha ? this.ha.instance : null;
      const others = [...this.instances.entries()].filter(([name]) => name !== own);
      const answers = await Promise.all(others.map(async ([, url]) => [url, await readHealth(url)]));
      const found = answers.find(([, ha]) => readyTakeover(ha));
      if (found) this.go(found[0]);
    } finally {
      this.probing = false;
    }
  }

  /** The same page (path and query) on another instance. */
  go(base) {
    const query = new URLSearchParams(location.search);
    query.delete("ws");  // it named the old instance's WebSocket
    const search = query.toString();
    location.assign(`${base}${location.pathname}${search ? `?${search}` : ""}${location.hash}`);
  }

  /** Why commands are off on this page ("" when they are not, as far as [ha] goes). */
  blockReason() {
    const ha = this.ha;
    if (!ha || ha.role === "active") return "";
    const other = ha.active_instance && ha.active_instance !== ha.instance ? ha.active_instance : null;
    return other ? this.t("why.standby", { active: other }) : this.t("why.no_active");
  }

  dismiss() {
    const takeover = this.ha && this.ha.takeover;
    if (takeover) localStorage.setItem(DISMISSED_KEY, `${this.ha.cell}:${takeover.epoch}`);
    this.render();
  }

  render() {
    this.renderBanner();
    this.renderNews();
  }

  renderBanner() {
    const banner = this.banner;
    const ha = this.ha;
    let kind = null;
    if (this.switching) kind = "switching";
    else if (ha && ha.role === "active" && ha.takeover && ha.takeover.instance === ha.instance
             && ha.takeover.previous_instance && !ha.takeover.ready_at) kind = "switching";
    else if (ha && ha.role !== "active" && this.reachable) {
      kind = ha.active_instance && ha.active_instance !== ha.instance ? "standby" : "no_active";
    }
    banner.hidden = kind === null;
    banner.dataset.state = kind || "";
    banner.replaceChildren();
    if (kind === "switching") {
      banner.textContent = this.t("ha.switching");
    } else if (kind === "standby") {
      banner.append(this.t("ha.standby", { active: ha.active_instance }), " ");
      const url = this.instances.get(ha.active_instance);
      if (url) {
        const link = document.createElement("a");
        link.href = `${url.replace(/\/+$/, "")}${location.pathname}${location.search}`;
        link.dataset.testid = "ha-active-link";
        link.textContent = this.t("ha.open", { instance: ha.active_instance });
        banner.append(link);
      }
    } else if (kind === "no_active") {
      banner.textContent = this.t("ha.no_active");
    }
  }

  renderNews() {
    const ha = this.ha;
    const takeover = ha && ha.takeover;
    const at = takeover ? Date.parse(takeover.at) : NaN;
    const show = Boolean(
      takeover && takeover.previous_instance && takeover.ready_at && takeover.seconds != null
      && Date.now() - at < RECENT_MS
      && localStorage.getItem(DISMISSED_KEY) !== `${ha.cell}:${takeover.epoch}`);
    this.news.hidden = !show;
    const text = this.news.querySelector("span");
    if (!show) { text.textContent = ""; return; }
    const lang = this.lang();
    text.textContent = this.t("ha.took_over", {
      instance: takeover.instance,
      previous: takeover.previous_instance,
      time: new Date(at).toLocaleTimeString(lang),
      seconds: Number(takeover.seconds).toLocaleString(lang, {
        minimumFractionDigits: 1, maximumFractionDigits: 1 }),
    });
    this.news.dataset.instance = takeover.instance;
    this.news.dataset.seconds = String(takeover.seconds);
  }

  /** True while the page looks for the gateway that took over. */
  get searching() {
    return this.switching;
  }

  /** The takeover record, when one is recent (for the station's "what happened"). */
  recentTakeover() {
    const takeover = this.ha && this.ha.takeover;
    if (!takeover || !takeover.previous_instance) return null;
    return Date.now() - Date.parse(takeover.at) < RECENT_MS ? takeover : null;
  }
}
