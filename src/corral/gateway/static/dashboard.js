// corral's live dashboard: renders the snapshots of /dashboard/events.
// Every string from the server is user data (names, crash reasons): it is only ever set as
// textContent or as an attribute value, never parsed as HTML.
"use strict";

(function () {
  const SPARK_POINTS = 60;
  const history = new Map(); // serving name -> recent requests/s

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  function replace(id, ...children) {
    document.getElementById(id).replaceChildren(...children);
  }

  function procRow(p) {
    const state = p.busy ? "busy" : p.state;
    const row = el("div", {
      class: "proc",
      "data-pid": p.id,
      "data-child-id": p.child_id,
      "data-kind": p.kind,
      "data-state": state,
      "data-restarts": p.restarts,
      "data-os-pid": p.os_pid,
    });
    if (p.child_id !== undefined) row.append(el("span", { class: "child-id" }, p.child_id), " ");
    row.append(el("span", { class: "pid" }, p.pid === null ? "(no process)" : "#" + p.id));
    if (p.name) row.append(" ", el("span", { class: "name" }, "'" + p.name + "'"));
    if (p.kind) row.append(" ", el("span", { class: "kind" }, p.kind));
    row.append(" ", el("span", { class: "state-" + state }, state));
    if (p.restarts !== undefined) {
      row.append(el("span", { class: "tag restarts" + (p.restarts ? " restarts-nonzero" : "") },
        "restarts " + p.restarts));
    }
    if (p.os_pid !== null && p.os_pid !== undefined) {
      row.append(el("span", { class: "tag os-pid" }, "os pid " + p.os_pid));
    }
    if (p.mailbox) row.append(el("span", { class: "tag" }, "mailbox " + p.mailbox));
    if (p.window) {
      const used = p.window.used === null ? "?" : p.window.used;
      row.append(el("span", { class: "tag window" },
        p.strategy + ", window " + used + "/" + p.window.max_restarts +
        " in " + p.window.max_seconds + " s"));
    }
    if (p.last_crash) row.append(" ", el("span", { class: "crash" }, "last crash: " + p.last_crash));
    return row;
  }

  function tree(p) {
    const item = el("li", {}, procRow(p));
    if (p.children && p.children.length) {
      item.append(el("ul", { class: "tree" }, ...p.children.map(tree)));
    }
    return item;
  }

  function sparkline(values) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const w = 120, h = 24;
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const top = Math.max(1, ...values);
    const step = w / Math.max(1, SPARK_POINTS - 1);
    const points = values.map((v, i) =>
      (i * step).toFixed(1) + "," + (h - 1 - (v / top) * (h - 2)).toFixed(1));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
    return svg;
  }

  function ms(seconds) {
    return (seconds * 1000).toFixed(2) + " ms";
  }

  function serving(s) {
    const box = el("div", { class: "serving", "data-serving": s.name });
    box.append(el("h3", {}, s.name));
    if (!s.running) {
      box.append(el("p", {}, "not running (version " + s.version + ")"));
      return box;
    }
    const rates = history.get(s.name) || [];
    rates.push(s.requests_per_second);
    while (rates.length > SPARK_POINTS) rates.shift();
    history.set(s.name, rates);
    const sizes = Object.entries(s.batch_sizes).map(([k, v]) => k + "×" + v).join(" ") || "none";
    const versions = s.versions.join(", ") + (s.swapping ? " (swapping)" : "");
    const stats = el("table", {},
      el("tr", {}, el("th", {}, "version(s)"), el("td", { class: "versions" }, versions)),
      el("tr", {}, el("th", {}, "queue"), el("td", { class: "queue" }, s.queue_length)),
      el("tr", {}, el("th", {}, "requests/s"),
        el("td", { class: "rps" }, s.requests_per_second.toFixed(1) + " ", sparkline(rates))),
      el("tr", {}, el("th", {}, "requests"),
        el("td", {}, s.requests + " (" + s.completed + " ok, " + s.failed + " failed, " +
          s.in_flight + " in flight)")),
      el("tr", {}, el("th", {}, "batch sizes"),
        el("td", {}, sizes + " (mean " + s.mean_batch_size.toFixed(2) + ")")),
      el("tr", {}, el("th", {}, "wait (mean / max)"),
        el("td", {}, ms(s.mean_wait) + " / " + ms(s.max_wait))),
      el("tr", {}, el("th", {}, "compute (mean / max)"),
        el("td", {}, ms(s.mean_compute) + " / " + ms(s.max_compute))),
      el("tr", {}, el("th", {}, "latency (p50 / p99)"),
        el("td", { class: "latency" }, ms(s.p50_latency) + " / " + ms(s.p99_latency))),
      el("tr", {}, el("th", {}, "partitions up"),
        el("td", { class: "partitions-up" }, s.partitions_up + " / " + s.partitions.length)));
    const parts = el("table", { class: "partitions" },
      el("tr", {}, ...["#", "version", "state", "batches", "crashes", "os pid"].map(
        (h) => el("th", {}, h))),
      ...s.partitions.map((p) => el("tr", { "data-partition": p.index, "data-os-pid": p.os_pid },
        el("td", {}, p.index), el("td", {}, p.version), el("td", {}, p.state),
        el("td", {}, p.batches), el("td", {}, p.crashes),
        el("td", {}, p.os_pid === null ? "–" : p.os_pid))));
    box.append(stats, parts);
    return box;
  }

  function pipeline(p) {
    const box = el("div", { class: "pipeline", "data-pipeline": p.name });
    box.append(el("h3", {}, p.name + (p.running ? "" : " (not running)")));
    box.append(el("table", {},
      el("tr", {}, ...["produced", "in flight", "acked", "failed", "ended/s"].map(
        (h) => el("th", {}, h))),
      el("tr", {}, el("td", {}, p.produced), el("td", {}, p.in_flight), el("td", {}, p.acked),
        el("td", {}, p.failed), el("td", {}, p.ended_per_second.toFixed(1)))));
    const stages = Object.entries(p.stages);
    if (stages.length) {
      box.append(el("table", { class: "stages" },
        el("tr", {}, el("th", {}, "stage"), el("th", {}, "acked"), el("th", {}, "failed")),
        ...stages.map(([name, s]) => el("tr", { "data-stage": name },
          el("td", {}, name), el("td", {}, s.acked), el("td", {}, s.failed)))));
    }
    return box;
  }

  function num(value, digits) {
    return typeof value === "number" ? value.toFixed(digits) : "–";
  }

  function training(runs) {
    return el("table", { class: "training" },
      el("tr", {}, ...["trainer", "round", "loss", "restarts", "round time"].map(
        (h) => el("th", {}, h))),
      ...runs.map((t) => el("tr", { "data-trainer": t.name },
        el("td", {}, t.name), el("td", { class: "round" }, t.round),
        el("td", { class: "loss" }, num(t.loss, 6)), el("td", {}, t.restarts),
        el("td", {}, typeof t.duration === "number" ? ms(t.duration) : "–"))));
  }

  function render(doc) {
    text("node-name", doc.node.name);
    text("summary", doc.node.processes + " processes · " + doc.node.registered.length +
      " registered · t=" + doc.node.time.toFixed(1) + " s");
    replace("servings", ...(doc.servings.length ? doc.servings.map(serving) : [el("p", {}, "none")]));
    document.getElementById("pipelines-section").hidden = doc.pipelines.length === 0;
    replace("pipelines", ...doc.pipelines.map(pipeline));
    const runs = doc.training || [];
    document.getElementById("training-section").hidden = runs.length === 0;
    replace("training", ...(runs.length ? [training(runs)] : []));
    replace("tree", doc.tree ? el("ul", { class: "tree root" }, tree(doc.tree)) : el("p", {}, "stopped"));
    replace("outside", el("ul", { class: "tree root" }, ...doc.outside.map(tree)));
    replace("crashes", ...doc.crashes.map((c) => el("li", { "data-child-id": c.child_id },
      "t=" + c.time.toFixed(2) + " s  " + c.supervisor + " child '" + c.child_id + "' " + c.pid +
      " → " + c.action + ": " + c.reason)));
  }

  function connect() {
    const token = new URLSearchParams(window.location.search).get("token");
    const url = "/dashboard/events" + (token ? "?token=" + encodeURIComponent(token) : "");
    const source = new EventSource(url);
    const status = document.getElementById("status");
    source.onopen = function () {
      status.dataset.state = "live";
      status.textContent = "live";
    };
    source.onmessage = function (event) {
      render(JSON.parse(event.data));
      document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
    };
    source.onerror = function () {
      status.dataset.state = "lost";
      status.textContent = "disconnected; retrying…";
    };
  }

  connect();
})();
