// Shepard dashboard: the live parts (server-sent events), selection and drag-and-drop.
// Plain JavaScript, no dependencies; every page works without it, minus live updates.
"use strict";

const MAX_LOG = 200000; // characters of a log kept in the page

function live(el) {
  const source = new EventSource(el.dataset.live);
  source.addEventListener("html", (e) => {
    el.innerHTML = e.data;
    el.dispatchEvent(new CustomEvent("updated", { bubbles: true }));
  });
  return source;
}

function followLog(pre) {
  const state = document.getElementById(pre.dataset.state);
  const setState = (text) => { if (state) state.textContent = text; };
  if (pre.source) pre.source.close();
  const source = new EventSource(pre.dataset.log);
  pre.source = source;
  pre.ended = false;
  source.addEventListener("attempt", (e) => {
    const info = JSON.parse(e.data);
    pre.textContent = info.skipped ? "… (" + info.skipped + " earlier bytes not shown)\n" : "";
    setState("attempt " + info.attempt + ", following");
  });
  source.addEventListener("chunk", (e) => {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    let text = pre.textContent + JSON.parse(e.data);
    if (text.length > MAX_LOG) text = text.slice(text.length - MAX_LOG);
    pre.textContent = text;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("end", (e) => {
    source.close();
    pre.ended = true;
    setState(JSON.parse(e.data) === "never ran" ? "(never ran)" : "(attempt over)");
    if (!pre.textContent) pre.textContent = "(empty)";
  });
}

function selection(form) {
  const boxes = () => Array.from(form.querySelectorAll('input[name="ids"]'));
  const all = document.getElementById("select-all");
  const count = document.getElementById("selected-count");
  const update = () => {
    const n = boxes().filter((b) => b.checked).length;
    form.querySelectorAll("[data-needs-selection]").forEach((b) => { b.disabled = n === 0; });
    if (count) count.textContent = n ? n + " selected" : "";
    if (all) all.checked = n > 0 && n === boxes().length;
  };
  if (all) all.addEventListener("change", () => { boxes().forEach((b) => { b.checked = all.checked; }); update(); });
  form.addEventListener("change", update);
  update();
}

function dropzone(zone) {
  const input = zone.querySelector('input[type="file"]');
  const chosen = document.getElementById("u-chosen");
  const show = () => { if (chosen) chosen.textContent = input.files.length ? "Chosen: " + input.files[0].name : ""; };
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
  });
  input.addEventListener("change", show);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(live);
  const logs = Array.from(document.querySelectorAll("pre[data-log]"));
  logs.forEach(followLog);
  const jobLive = document.getElementById("job-live");
  if (jobLive) {
    jobLive.addEventListener("updated", () => {
      const section = jobLive.querySelector("[data-status]");
      const active = section && ["queued", "running"].includes(section.dataset.status);
      // a retried job runs again: follow its new attempt
      if (active) logs.forEach((pre) => { if (pre.ended) followLog(pre); });
    });
  }
  const form = document.getElementById("selection");
  if (form) selection(form);
  const zone = document.getElementById("dropzone");
  if (zone) dropzone(zone);
});
