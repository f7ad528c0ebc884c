// The tuner monitor page: the job list, and one job's live view. The server folds the job's
// events (the same JobView the terminal views use); this page polls the result and only draws.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
let polling = null;
let chosen = null;

async function loadJobs() {
  const reply = await fetch(withToken("api/jobs"));
  const data = await reply.json();
  const daemon = document.getElementById("daemon");
  if (!reply.ok) { daemon.textContent = data.error; daemon.className = "error"; return; }
  daemon.textContent = ""; daemon.className = "dim";
  const list = document.getElementById("jobs");
  list.replaceChildren();
  const jobs = [...data.jobs].reverse();  // the newest first
  for (const job of jobs) {
    const item = document.createElement("li");
    item.dataset.id = job.id;
    item.className = job.id === chosen ? "chosen" : "";
    const state = document.createElement("span");
    state.className = "state dim";
    state.textContent = job.stalled ? job.state + ", stalled" : job.state;
    item.append(job.name || job.id, state);
    item.onclick = () => choose(job.id);
    list.append(item);
  }
  const wanted = new URLSearchParams(location.search).get("job");
  if (!chosen && jobs.length) choose(wanted || jobs[0].id);
}

function choose(id) {
  chosen = id;
  for (const item of document.querySelectorAll("#jobs li")) item.classList.toggle("chosen", item.dataset.id === id);
  document.getElementById("job").hidden = false;
  document.getElementById("empty").hidden = true;
  document.getElementById("job-title").textContent = id;
  poll();
}

async function poll() {
  clearTimeout(polling);
  const id = chosen;
  try {
    const reply = await fetch(withToken("api/jobs/" + encodeURIComponent(id) + "/view"));
    if (id !== chosen) return;
    const data = await reply.json();
    if (reply.ok) draw(data);
    else document.getElementById("status").textContent = data.error;
  } catch (error) {
    document.getElementById("status").textContent = "the monitor is not answering (" + error + ")";
  }
  polling = setTimeout(poll, 1000);
}

function fileUrl(path) {
  return withToken("api/jobs/" + encodeURIComponent(chosen) + "/file?path=" + encodeURIComponent(path));
}

function draw(view) {
  const status = document.getElementById("status");
  const state = view.state && view.state !== view.phase ? view.state + " · " : "";
  status.textContent = state + (view.phase || "starting") + (view.message ? " — " + view.message : "")
    + (view.daemon_down ? " (tunerd is not answering; reconnecting…)" : "");
  status.className = view.errors.length ? "error" : "";
  const total = Math.max(view.total, 1);
  document.getElementById("bar-fill").style.width = (100 * view.step / total) + "%";
  const p = view.progress || {};
  const number = (v, digits) => typeof v === "number" ? v.toFixed(digits) : "-";
  document.getElementById("numbers").textContent =
    `step ${view.step}/${view.total} · loss ${number(p.loss, 4)} · lr ${typeof p.lr === "number" ? p.lr.toExponential(2) : "-"}`
    + ` · ${number(p.steps_per_s, 2)} it/s · ETA ${view.eta}`;
  drawLoss(view.losses);
  drawSamples(view);
  document.getElementById("log").textContent = view.log.join("\n");
}

function drawLoss(losses) {
  const canvas = document.getElementById("loss");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const legend = document.getElementById("loss-legend");
  if (losses.length < 2) { legend.textContent = "loss: waiting for the first steps"; return; }
  const low = Math.min(...losses), high = Math.max(...losses), span = (high - low) || 1;
  const pad = 6, w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
  ctx.strokeStyle = getComputedStyle(document.body).getPropertyValue("--accent") || "#2a7ab0";
  ctx.lineWidth = 2;
  ctx.beginPath();
  losses.forEach((loss, i) => {
    const x = pad + w * i / (losses.length - 1), y = pad + h * (1 - (loss - low) / span);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
  legend.textContent = `loss over the last ${losses.length} reports: ${low.toFixed(4)} – ${high.toFixed(4)}`;
}

function drawSamples(view) {
  const samples = document.getElementById("samples");
  const wanted = view.validations.map((v) => ({ caption: `${v.nickname}, step ${v.step}`, paths: v.paths || [] }));
  if (view.preview && view.preview.path) {
    wanted.push({ caption: `preview ${view.preview.k}/${view.preview.n}`, paths: [view.preview.path] });
  }
  const key = JSON.stringify(wanted);
  if (samples.dataset.key === key) return;  // unchanged: keep the loaded images
  samples.dataset.key = key;
  samples.replaceChildren();
  for (const sample of wanted) {
    const figure = document.createElement("figure");
    const video = sample.paths.find((p) => p.endsWith(".mp4"));
    const image = sample.paths.find((p) => /\.(png|jpe?g|webp|gif)$/.test(p));
    let media;
    if (video) {
      media = document.createElement("video");
      Object.assign(media, { src: fileUrl(video), autoplay: true, loop: true, muted: true, playsInline: true });
      if (image) media.poster = fileUrl(image);
    } else if (image) {
      media = document.createElement("img");
      media.src = fileUrl(image);
      media.alt = sample.caption;
    } else continue;
    const caption = document.createElement("figcaption");
    caption.textContent = sample.caption;
    figure.append(media, caption);
    samples.append(figure);
  }
}

loadJobs();
setInterval(loadJobs, 5000);
