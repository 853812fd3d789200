// The Playground's live parts. Without this script the form still works: it posts to
// /playground/runs and the browser lands on the run's page; the price shown is the server's.
(() => {
  const form = document.getElementById("pg-form");
  if (!form) return;
  const $ = (sel, root = document) => root.querySelector(sel);
  const priceOut = $("#pg-price");
  const problem = $("#pg-problem");
  const curl = $("#pg-curl code");
  const statusBox = $("#pg-status");
  const outputBox = $("#pg-output");
  const recent = $("#pg-recent");
  const runButton = $("#pg-run");
  const texts = document.getElementById("playground").dataset;
  const text = (key) => texts[key] || "";
  const csrf = () => (form.querySelector('input[name="csrf_token"]') || {}).value || "";

  const formBody = () => {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (typeof v === "string") params.append(k, v);
    }
    return params;
  };

  // The price, the input and the curl of the form as it is now, from the server's own pricing.
  let priceTimer = null;
  let priceSeq = 0;
  const refreshPrice = () => {
    clearTimeout(priceTimer);
    priceTimer = setTimeout(async () => {
      const seq = ++priceSeq;
      try {
        const r = await fetch("/playground/price", {
          method: "POST",
          headers: { "Accept": "application/json" },
          body: formBody(),
        });
        const data = await r.json();
        if (seq !== priceSeq) return;
        if (!r.ok) {
          problem.textContent = data.error ? data.error.message : "";
          return;
        }
        priceOut.textContent = data.price;
        priceOut.dataset.costUsd = data.costUsd ?? "";
        curl.textContent = data.curl;
        problem.textContent = data.problem || "";
      } catch {
        // Offline or the server went away: keep the last price.
      }
    }, 200);
  };
  form.addEventListener("input", refreshPrice);
  form.addEventListener("change", refreshPrice);

  // --- image URLs: add, remove, previews, uploads -------------------------------------------
  const sameSite = (url) => {
    try {
      const u = new URL(url, location.href);
      return u.origin === location.origin || u.protocol === "data:";
    } catch {
      return false;
    }
  };
  const preview = (li, src) => {
    let img = li.querySelector("img.pg-preview");
    if (!src || !sameSite(src)) {
      if (img) img.remove();
      return;
    }
    if (!img) {
      img = document.createElement("img");
      img.className = "pg-preview";
      img.alt = text("pgPreviewAlt");
      li.prepend(img);
    }
    img.src = src;
  };
  for (const box of document.querySelectorAll(".pg-urls")) {
    const list = $(".pg-url-list", box);
    const add = $(".pg-add-url", box);
    const upload = $(".pg-upload", box);
    const fileInput = upload ? $("input[type=file]", upload) : null;
    const status = $(".pg-upload-status", box);
    const field = box.dataset.field;
    const maxItems = Number(box.dataset.maxItems || 0) || Infinity;
    const maxMb = Number(box.dataset.maxMb || 30);
    const rows = () => [...list.querySelectorAll("li")];
    const filled = () => rows().filter((li) => $("input", li).value.trim() !== "");
    const withRemove = (li) => {
      if ($(".pg-remove", li)) return;
      const b = document.createElement("button");
      b.type = "button";
      b.className = "pg-remove link";
      b.textContent = text("pgRemove");
      b.addEventListener("click", () => {
        if (rows().length > 1) li.remove();
        else {
          $("input", li).value = "";
          preview(li, "");
        }
        refreshPrice();
        sync();
      });
      li.append(b);
      $("input", li).addEventListener("change", (e) => preview(li, e.target.value));
    };
    const addRow = (value = "", src = "") => {
      let li = rows().find((r) => $("input", r).value.trim() === "");
      if (!li) {
        if (rows().length >= maxItems) return null;
        li = document.createElement("li");
        const n = rows().length;
        const id = `pg-${field}-${n}-${Date.now()}`;
        const label = document.createElement("label");
        label.className = "visually-hidden";
        label.htmlFor = id;
        label.textContent = text("pgImageUrl");
        const input = document.createElement("input");
        input.type = "url";
        input.id = id;
        input.name = `input.${field}`;
        input.placeholder = "https://";
        li.append(label, input);
        list.append(li);
        withRemove(li);
      }
      $("input", li).value = value;
      preview(li, src || value);
      sync();
      return li;
    };
    const sync = () => {
      if (add) add.disabled = rows().length >= maxItems;
    };
    rows().forEach(withRemove);
    rows().forEach((li) => preview(li, $("input", li).value));
    if (add) {
      add.hidden = false;
      add.addEventListener("click", () => {
        const li = addRow();
        if (li) $("input", li).focus();
      });
    }
    if (upload && fileInput) {
      upload.hidden = false;
      fileInput.addEventListener("change", async () => {
        for (const file of fileInput.files) {
          if (filled().length >= maxItems) {
            status.textContent = text("pgTooMany").replace("{n}", maxItems);
            break;
          }
          if (file.size > maxMb * 1024 * 1024) {
            status.textContent = `${file.name}: ${text("pgTooLarge").replace("{mb}", maxMb)}`;
            continue;
          }
          status.textContent = `${text("pgUploading")} ${file.name}`;
          const body = new FormData();
          body.append("file", file);
          try {
            const r = await fetch("/files", {
              method: "POST",
              headers: { "Accept": "application/json", "X-CSRF-Token": csrf() },
              body,
            });
            const data = await r.json().catch(() => ({}));
            if (!r.ok || !data.url) {
              status.textContent = `${file.name}: ${data.error ? data.error.message : r.status}`;
              continue;
            }
            const dataUrl = await new Promise((resolve) => {
              const reader = new FileReader();
              reader.onload = () => resolve(reader.result);
              reader.onerror = () => resolve("");
              reader.readAsDataURL(file);
            });
            addRow(data.url, dataUrl);
            status.textContent = `${text("pgUploaded")} ${file.name}`;
          } catch {
            status.textContent = `${file.name}: ${text("pgUploadFailed")}`;
          }
        }
        fileInput.value = "";
        refreshPrice();
      });
    }
    box.pgSet = (urls) => {
      rows().forEach((li, i) => (i === 0 ? (($("input", li).value = ""), preview(li, "")) : li.remove()));
      for (const u of urls || []) addRow(u);
      sync();
    };
  }

  // --- examples fill the form ---------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const a = event.target.closest("a.example-fill[data-example]");
    if (!a) return;
    let input;
    try {
      input = JSON.parse(a.dataset.example);
    } catch {
      return;
    }
    event.preventDefault();
    for (const el of form.elements) {
      if (!el.name || !el.name.startsWith("input.")) continue;
      const name = el.name.slice(6);
      if (el.closest(".pg-urls")) continue;
      const dflt = el.tagName === "SELECT"
        ? ([...el.options].find((o) => o.defaultSelected) || el.options[0] || {}).value
        : el.type === "checkbox" ? el.defaultChecked : el.defaultValue;
      const v = name in input ? input[name] : dflt;
      if (el.type === "checkbox") el.checked = v === true || v === "true";
      else el.value = typeof v === "string" ? v : v == null ? "" : JSON.stringify(v);
    }
    for (const box of document.querySelectorAll(".pg-urls")) {
      if (box.pgSet) box.pgSet(input[box.dataset.field] || []);
    }
    refreshPrice();
    document.getElementById("playground").scrollIntoView({ behavior: "smooth", block: "start" });
    const first = form.querySelector("textarea, select, input:not([type=hidden])");
    if (first) first.focus({ preventScroll: true });
  });

  // --- run, poll, show ----------------------------------------------------------------------
  const badge = (status) => {
    const s = document.createElement("span");
    s.className = `badge ${status}`;
    s.textContent = status;
    return s;
  };
  const say = (msg, kind) => {
    statusBox.replaceChildren();
    const p = document.createElement("p");
    if (kind) p.className = `notice ${kind}`;
    if (msg instanceof Node) p.append(msg);
    else p.textContent = msg;
    statusBox.append(p);
  };
  const showRun = (run) => {
    const line = document.createElement("span");
    const link = document.createElement("a");
    link.href = run.page;
    link.textContent = run.id;
    line.append(link, " ", badge(run.status));
    if (run.error) line.append(` ${run.error.code}: ${run.error.message}`);
    say(line, run.status === "failed" ? "error" : "");
    const item = recent && recent.querySelector(`li[data-run="${run.id}"]`);
    if (item) item.querySelector(".badge").replaceWith(badge(run.status));
    if (run.status !== "succeeded") return;
    outputBox.replaceChildren();
    (run.files || []).forEach((f, i) => {
      const fig = document.createElement("figure");
      let media;
      if (f.kind === "image") {
        media = document.createElement("img");
        media.alt = `${text("pgOutputAlt")} ${i + 1}`;
      } else if (f.kind === "video" || f.kind === "audio") {
        media = document.createElement(f.kind);
        media.controls = true;
      }
      if (media) {
        media.src = f.href;
        fig.append(media);
      }
      const cap = document.createElement("figcaption");
      const dl = document.createElement("a");
      dl.href = f.href;
      dl.download = "";
      dl.textContent = `${text("pgDownload")} ${i + 1}`;
      cap.append(dl);
      fig.append(cap);
      outputBox.append(fig);
    });
  };
  const terminal = (s) => s === "succeeded" || s === "failed" || s === "canceled";
  const poll = async (id) => {
    for (let i = 0; i < 900; i++) {
      const r = await fetch(`/playground/runs/${encodeURIComponent(id)}`, {
        headers: { "Accept": "application/json" },
      });
      if (!r.ok) {
        say(`${text("pgPollFailed")} (${r.status})`, "error");
        return;
      }
      const run = await r.json();
      showRun(run);
      if (terminal(run.status)) return;
      await new Promise((done) => setTimeout(done, i < 10 ? 500 : 1500));
    }
  };

  form.addEventListener("submit", async (event) => {
    if (!runButton) return;
    event.preventDefault();
    runButton.disabled = true;
    outputBox.replaceChildren();
    say(text("pgStarting"));
    try {
      const r = await fetch(form.action, {
        method: "POST",
        headers: { "Accept": "application/json", "X-CSRF-Token": csrf() },
        body: formBody(),
      });
      const data = await r.json().catch(() => ({}));
      if (r.status === 401) {
        const a = document.createElement("a");
        a.href = `/login?next=${encodeURIComponent(location.pathname)}`;
        a.textContent = text("pgLogin");
        say(a, "error");
        return;
      }
      if (!r.ok) {
        say(data.error ? `${data.error.code}: ${data.error.message}` : String(r.status), "error");
        return;
      }
      if (recent) {
        const li = document.createElement("li");
        li.dataset.run = data.id;
        const a = document.createElement("a");
        a.href = data.page;
        const code = document.createElement("code");
        code.textContent = data.id;
        a.append(code);
        li.append(a, " ", badge(data.status));
        recent.prepend(li);
        const empty = document.getElementById("pg-recent-empty");
        if (empty) empty.remove();
      }
      showRun(data);
      if (!terminal(data.status)) await poll(data.id);
    } catch {
      say(text("pgPollFailed"), "error");
    } finally {
      runButton.disabled = false;
    }
  });
})();
