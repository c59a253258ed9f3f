"""The gateway's playground: one page at ``/`` to try the API in a browser.

Type a text, pick a voice (OpenAI's names, the miners' own, or one you upload), press
play; or make music from a prompt. Each answer says which miner made it and the score
that ranked it (the ``X-Chorus-Miner-Uid`` and ``X-Chorus-Miner-Score`` headers). The page
calls the same public routes as any client, with the API key typed into it (kept in the
browser's localStorage, sent only to this gateway). Plain HTML and JavaScript in one
string: no CDN, nothing to build. Speech plays while it streams in (Media Source
Extensions, where the browser has them for MP3; else once it has arrived).
"""

from __future__ import annotations

from chorus import __version__

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:860px;color:#111;padding:0 16px}
h1{margin:0 0 2px}h2{font-size:18px;margin:0 0 10px}.muted{color:#6b7280}
section{border:1px solid #e5e7eb;border-radius:8px;padding:16px;margin:16px 0}
label{display:block;font-size:13px;color:#374151;margin:8px 0 3px}
input[type=text],input[type=password],input[type=number],textarea,select{width:100%;
box-sizing:border-box;padding:7px 9px;border:1px solid #d1d5db;border-radius:6px;font:inherit}
textarea{min-height:90px}.row{display:flex;gap:12px;align-items:end;flex-wrap:wrap}
.row>div{flex:1;min-width:140px}button{padding:8px 16px;border-radius:6px;border:0;
background:#2563eb;color:#fff;font:inherit;cursor:pointer}button:disabled{background:#93c5fd}
button.quiet{background:#e5e7eb;color:#111}audio{width:100%;margin-top:12px}
.info{font-size:13px;margin-top:6px}.error{color:#b91c1c;font-size:13px;margin-top:6px}
"""

SCRIPT = r"""
const $ = (id) => document.getElementById(id);
const KEY = "chorus.apiKey";
$("key").value = localStorage.getItem(KEY) || "";
$("key").addEventListener("input", () => {
  localStorage.setItem(KEY, $("key").value.trim());
  loadVoices(); loadUsage();
});

function auth() {
  const key = $("key").value.trim();
  if (!key) throw new Error("enter your API key first");
  return {"Authorization": "Bearer " + key};
}

async function failure(r) {
  try { return (await r.json()).error.message; } catch (e) { return "HTTP " + r.status; }
}

function showError(where, e) { $(where).textContent = e ? String(e.message || e) : ""; }

function showMiner(where, r, started, firstMs) {
  const uid = r.headers.get("x-chorus-miner-uid"), score = r.headers.get("x-chorus-miner-score");
  const el = $(where);
  el.dataset.uid = uid; el.dataset.score = score;
  const took = ((performance.now() - started) / 1000).toFixed(2);
  const first = firstMs == null ? "" : `, first audio after ${(firstMs / 1000).toFixed(2)} s`;
  el.textContent = `made by miner uid ${uid} (score ${score})${first}, complete after ${took} s`;
}

async function loadVoices() {
  const select = $("voice"), keep = select.value;
  let list;
  try {
    const r = await fetch("/v1/audio/voices", {headers: auth()});
    if (!r.ok) throw new Error(await failure(r));
    list = (await r.json()).data;
  } catch (e) { showError("speech-error", e); return; }
  showError("speech-error", null);
  select.innerHTML = "";
  const groups = {builtin: "OpenAI voices (each miner's default)", miner: "miners' voices",
                  audio_sample: "your voices (cloned)"};
  for (const [type, title] of Object.entries(groups)) {
    const voices = list.filter((v) => v.type === type);
    if (!voices.length) continue;
    const group = document.createElement("optgroup");
    group.label = title;
    for (const v of voices) {
      const o = document.createElement("option");
      o.value = v.id; o.dataset.type = v.type;
      o.textContent = v.type === "audio_sample" ? `${v.name} (${v.id})` : v.name;
      group.appendChild(o);
    }
    select.appendChild(group);
  }
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  $("delete-voice").disabled = select.selectedOptions[0]?.dataset.type !== "audio_sample";
}
$("voice").addEventListener("change", () => {
  $("delete-voice").disabled = $("voice").selectedOptions[0]?.dataset.type !== "audio_sample";
});

async function loadUsage() {
  try {
    const r = await fetch("/v1/usage", {headers: auth()});
    if (!r.ok) return;
    const u = await r.json();
    $("usage").textContent =
      `key ${u.key}: ${u.requests} requests, ${u.seconds.toFixed(1)} s of audio served`;
  } catch (e) { /* no key yet */ }
}

// Append each chunk to a MediaSource as it arrives, so playback starts with the first
// sentence; the whole answer is also kept as a blob for the download link.
async function streamInto(player, r, type, started) {
  const chunks = [];
  let firstMs = null;
  if (window.MediaSource && MediaSource.isTypeSupported(type)) {
    const source = new MediaSource();
    player.src = URL.createObjectURL(source);
    await new Promise((ok) => source.addEventListener("sourceopen", ok, {once: true}));
    const buffer = source.addSourceBuffer(type);
    const idle = async () => {
      while (buffer.updating) {
        await new Promise((ok) => buffer.addEventListener("updateend", ok, {once: true}));
      }
    };
    const reader = r.body.getReader();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      chunks.push(value);
      await idle();
      buffer.appendBuffer(value);
      if (firstMs == null) { firstMs = performance.now() - started; player.play().catch(() => {}); }
    }
    // Chromium can report the buffer busy again just after its last updateend: wait
    // until it really is idle (a headless test hit this once in a few runs).
    for (;;) {
      await idle();
      try { source.endOfStream(); break; } catch (e) { if (!buffer.updating) throw e; }
    }
  } else {
    const reader = r.body.getReader();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      if (firstMs == null) firstMs = performance.now() - started;
      chunks.push(value);
    }
    player.src = URL.createObjectURL(new Blob(chunks, {type}));
    player.play().catch(() => {});
  }
  return {firstMs, blob: new Blob(chunks, {type})};
}

// One player at a time: starting one pauses the others.
document.querySelectorAll("audio").forEach((a) => a.addEventListener("play", () => {
  document.querySelectorAll("audio").forEach((b) => { if (b !== a) b.pause(); });
}));

function offer(link, blob, name) {
  link.href = URL.createObjectURL(blob); link.download = name; link.hidden = false;
}

$("speak").addEventListener("click", async () => {
  showError("speech-error", null);
  $("speak").disabled = true;
  const started = performance.now();
  try {
    const body = {model: "chorus-tts", input: $("text").value, voice: $("voice").value || "alloy",
                  speed: parseFloat($("speed").value), response_format: "mp3"};
    const r = await fetch("/v1/audio/speech", {method: "POST", body: JSON.stringify(body),
      headers: {...auth(), "Content-Type": "application/json"}});
    if (!r.ok) throw new Error(await failure(r));
    const {firstMs, blob} = await streamInto($("speech-audio"), r, "audio/mpeg", started);
    showMiner("speech-info", r, started, firstMs);
    offer($("speech-download"), blob, "speech.mp3");
    loadUsage();
  } catch (e) { showError("speech-error", e); }
  $("speak").disabled = false;
});

$("upload").addEventListener("click", async () => {
  showError("voice-error", null);
  const file = $("voice-file").files[0];
  if (!file) {
    showError("voice-error", "choose a recording (2-30 s of one person speaking)");
    return;
  }
  const form = new FormData();
  form.append("file", file);
  if ($("voice-name").value.trim()) form.append("name", $("voice-name").value.trim());
  $("upload").disabled = true;
  try {
    const r = await fetch("/v1/voices", {method: "POST", body: form, headers: auth()});
    if (!r.ok) throw new Error(await failure(r));
    const voice = await r.json();
    await loadVoices();
    $("voice").value = voice.id;
    $("delete-voice").disabled = false;
    $("voice-status").textContent =
      `uploaded "${voice.name}" as ${voice.id} (${voice.duration_s} s)`;
  } catch (e) { showError("voice-error", e); }
  $("upload").disabled = false;
});

$("delete-voice").addEventListener("click", async () => {
  const id = $("voice").value;
  try {
    const r = await fetch("/v1/voices/" + encodeURIComponent(id),
                          {method: "DELETE", headers: auth()});
    if (!r.ok) throw new Error(await failure(r));
    $("voice-status").textContent = `deleted ${id}`;
    await loadVoices();
  } catch (e) { showError("voice-error", e); }
});

$("compose").addEventListener("click", async () => {
  showError("music-error", null);
  $("compose").disabled = true;
  const started = performance.now();
  try {
    const body = {model: "chorus-music", prompt: $("music-prompt").value,
                  duration: parseFloat($("music-duration").value), response_format: "mp3"};
    const r = await fetch("/v1/audio/music", {method: "POST", body: JSON.stringify(body),
      headers: {...auth(), "Content-Type": "application/json"}});
    if (!r.ok) throw new Error(await failure(r));
    const blob = await r.blob();
    $("music-audio").src = URL.createObjectURL(blob);
    $("music-audio").play().catch(() => {});
    showMiner("music-info", r, started, null);
    offer($("music-download"), blob, "music.mp3");
    loadUsage();
  } catch (e) { showError("music-error", e); }
  $("compose").disabled = false;
});

$("speed").addEventListener("input", () => {
  $("speed-value").textContent = $("speed").value + "x";
});
if ($("key").value) { loadVoices(); loadUsage(); }
"""

BODY = """
<h1>chorus playground</h1>
<p class="muted">Speech, your own voices and music from the chorus network's best-scored
miners, through this gateway's OpenAI-style API. chorus {version}</p>

<section>
  <form onsubmit="return false"><label for="key">API key (kept in this browser only)</label>
  <input id="key" type="password" autocomplete="off" placeholder="sk-..."></form>
  <div class="info muted" id="usage"></div>
</section>

<section>
  <h2>Speech</h2>
  <label for="text">Text</label>
  <textarea id="text">Hello from the chorus network. Every sentence is spoken by the miner \
the validators score best, and it starts playing before the last one is made.</textarea>
  <div class="row">
    <div><label for="voice">Voice</label>
      <select id="voice"><option value="alloy">alloy</option></select></div>
    <div><label for="speed">Speed <span id="speed-value">1x</span></label>
      <input id="speed" type="range" min="0.5" max="2" step="0.25" value="1"></div>
    <div style="flex:0"><button id="speak">Play</button></div>
  </div>
  <audio id="speech-audio" controls></audio>
  <div class="info" id="speech-info"></div>
  <a id="speech-download" hidden>download MP3</a>
  <div class="error" id="speech-error"></div>

  <h2 style="margin-top:18px">Your voice</h2>
  <div class="row">
    <div><label for="voice-file">A recording of one person speaking, 2-30 s
      (WAV, FLAC, MP3, Ogg, M4A)</label>
      <input id="voice-file" type="file" accept="audio/*"></div>
    <div><label for="voice-name">Name</label>
      <input id="voice-name" type="text" placeholder="my voice"></div>
    <div style="flex:0"><button id="upload">Upload</button></div>
    <div style="flex:0"><button id="delete-voice" class="quiet" disabled>Delete</button></div>
  </div>
  <div class="info" id="voice-status"></div>
  <div class="error" id="voice-error"></div>
</section>

<section>
  <h2>Music</h2>
  <label for="music-prompt">Prompt</label>
  <input id="music-prompt" type="text"
    value="calm lo-fi piano at 80 bpm in A minor with soft drums">
  <div class="row">
    <div><label for="music-duration">Seconds</label>
      <input id="music-duration" type="number" min="1" max="60" value="10"></div>
    <div style="flex:0"><button id="compose">Compose</button></div>
  </div>
  <audio id="music-audio" controls></audio>
  <div class="info" id="music-info"></div>
  <a id="music-download" hidden>download MP3</a>
  <div class="error" id="music-error"></div>
</section>
"""

PLAYGROUND = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<link rel="icon" href="data:,">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f"<title>chorus playground</title><style>{STYLE}</style></head>"
    f"<body>{BODY.replace('{version}', __version__)}<script>{SCRIPT}</script></body></html>"
)
