// The page: streams the microphone as 16 kHz int16 PCM over the WebSocket protocol, shows the
// input level, the partial and final results with their times and the measured lag, sends files
// to /transcribe, and copies or downloads the transcript.
import { Pcm16Blocks, Pcm16Downsampler, TARGET_RATE } from "./pcm.js";
import { Transcript, clock } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const statusLine = $("status");
const transcript = new Transcript($("transcript"), () => {
  for (const id of ["copy", "download", "clear"]) $(id).disabled = transcript.empty;
});

let session = null; // {ws, context, microphone, node, flush, sentSamples, sent}
const lags = []; // the last 20 measured partial delays (ms)

function setStatus(text, failed = false) {
  statusLine.textContent = text;
  statusLine.className = failed ? "failed" : "";
}

async function showInfo() {
  try {
    const info = await (await fetch("info")).json();
    $("model").textContent = `${info.model} (${(info.parameters / 1e6).toFixed(1)} M)`;
    $("context").textContent = `${info.chunk_size} / ${info.left_context} / ${info.right_context} frames`
      + ` (${info.chunk_ms} ms chunks)`;
    $("final-latency").textContent = `${info.final_latency_ms} ms`;
    window.echostream.info = info;
  } catch (error) {
    setStatus(`cannot read the server's settings: ${error.message || error}`, true);
  }
}

// ------------------------------------------------------------------------------ microphone

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function showLevel(block) {
  let sum = 0;
  for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
  const rms = Math.sqrt(sum / Math.max(1, block.length)) / 32768;
  const db = rms > 0 ? 20 * Math.log10(rms) : -Infinity;
  window.echostream.levelDb = db;
  $("level").textContent = Number.isFinite(db) ? `${db.toFixed(0)} dBFS` : "– dBFS";
  $("level-bar").style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  if (message.status !== "ok") {
    setStatus(`error: ${message.message}`, true);
    return;
  }
  if (message.type === "server_ready") {
    setStatus("listening…");
  } else if (message.type === "partial_result") {
    const audioMs = message.audio_ms ?? 0;
    transcript.partial(JSON.parse(message.nbest)[0].sentence, audioMs);
    if (session) {
      // when the last audio this partial covers was sent: its delay is the time since
      const sent = session.sent;
      while (sent.length > 1 && sent[1].ms <= audioMs) sent.shift();
      const entry = sent.find((e) => e.ms >= audioMs) || sent[sent.length - 1];
      if (entry) lags.push(Math.max(0, performance.now() - entry.time));
      if (lags.length > 20) lags.shift();
      const sorted = [...lags].sort((a, b) => a - b);
      const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
      window.echostream.lagMs = median;
      $("lag").textContent = `${Math.round(median)} ms`;
    }
  } else if (message.type === "final_result") {
    const best = JSON.parse(message.nbest)[0];
    transcript.final(best.sentence, best.word_pieces || []);
  } else if (message.type === "speech_end") {
    setStatus("done");
  }
}

async function connectAudio(context, microphone, send) {
  const source = context.createMediaStreamSource(microphone);
  if (context.audioWorklet && typeof AudioWorkletNode !== "undefined") {
    await context.audioWorklet.addModule("static/recorder-worklet.js");
    const node = new AudioWorkletNode(context, "pcm16-recorder", { numberOfOutputs: 0 });
    node.port.onmessage = (event) => send(event.data);
    source.connect(node);
    return { node, flush: () => node.port.postMessage("flush") };
  }
  // Older browsers: a ScriptProcessor on the main thread, connected to the (silent) output.
  const downsampler = new Pcm16Downsampler(context.sampleRate, TARGET_RATE);
  const blocks = new Pcm16Blocks(TARGET_RATE / 10, send);
  const node = context.createScriptProcessor(4096, 1, 1);
  node.onaudioprocess = (event) => {
    blocks.push(downsampler.process(event.inputBuffer.getChannelData(0)));
    event.outputBuffer.getChannelData(0).fill(0);
  };
  source.connect(node);
  node.connect(context.destination);
  return { node, flush: () => blocks.flush() };
}

async function start() {
  $("start").disabled = true;
  setStatus("starting…");
  lags.length = 0;
  try {
    const microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    const context = new AudioContext();
    await context.resume();
    const ws = new WebSocket(socketUrl());
    ws.binaryType = "arraybuffer";
    const waiting = []; // audio recorded before the socket opened
    const sentNow = (block) => {
      if (!session) return;
      session.sentSamples += block.length;
      session.sent.push({ ms: (session.sentSamples * 1000) / TARGET_RATE, time: performance.now() });
      if (session.sent.length > 600) session.sent.shift();
    };
    const send = (block) => {
      showLevel(block);
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(block.buffer);
        sentNow(block);
      } else if (ws.readyState === WebSocket.CONNECTING) waiting.push(block);
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({
        signal: "start", nbest: 1, continuous_decoding: true, sample_rate: TARGET_RATE,
      }));
      for (const block of waiting.splice(0)) {
        ws.send(block.buffer);
        sentNow(block);
      }
    };
    ws.onmessage = onMessage;
    ws.onerror = () => setStatus("connection error", true);
    ws.onclose = (event) => {
      if (event.code !== 1000 && statusLine.className !== "failed") {
        setStatus(`connection closed (code ${event.code})`, true);
      }
      stopAudio();
      $("start").disabled = false;
      $("stop").disabled = true;
    };
    const audio = await connectAudio(context, microphone, send);
    session = { ws, context, microphone, sentSamples: 0, sent: [], ...audio };
    $("stop").disabled = false;
  } catch (error) {
    setStatus(`cannot record: ${error.message || error}`, true);
    stopAudio();
    $("start").disabled = false;
  }
}

function stopAudio() {
  if (!session) return;
  session.microphone.getTracks().forEach((track) => track.stop());
  session.node.disconnect();
  session.context.close();
  session = null;
  showLevel(new Int16Array(0));
}

function stop() {
  if (!session) return;
  $("stop").disabled = true;
  setStatus("finishing…");
  session.flush();
  const ws = session.ws;
  // Let the last block leave the audio thread before the end signal.
  setTimeout(() => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ signal: "end" }));
    stopAudio();
  }, 50);
}

// ----------------------------------------------------------------------------- file upload

async function upload() {
  const file = $("upload-file").files[0];
  if (!file) return;
  const limit = window.echostream.info?.max_upload_bytes;
  if (limit && file.size > limit) {
    setStatus(`${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the server takes up to ${(limit / 1e6).toFixed(0)} MB`, true);
    return;
  }
  $("upload").disabled = true;
  setStatus(`transcribing ${file.name}…`);
  const started = performance.now();
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch("transcribe", { method: "POST", body: form });
    const reply = await response.json();
    if (!response.ok) throw new Error(reply.error || `HTTP ${response.status}`);
    transcript.file(file.name, reply);
    const seconds = (performance.now() - started) / 1000;
    setStatus(`${file.name}: ${reply.duration.toFixed(1)} s of audio in ${seconds.toFixed(1)} s`
      + (reply.error ? ` (stopped early: ${reply.error})` : ""));
  } catch (error) {
    setStatus(`${file.name}: ${error.message || error}`, true);
  } finally {
    $("upload").disabled = false;
  }
}

// ------------------------------------------------------------------------ copy and download

async function copy() {
  const text = transcript.text();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea"); // where the Clipboard API is not allowed
    area.value = text;
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (!ok) {
      setStatus("the browser refused to copy; use Download", true);
      return;
    }
  }
  window.echostream.copied = text;
  setStatus(`copied ${text.split("\n").length} lines`);
}

function download() {
  const url = URL.createObjectURL(new Blob([transcript.text() + "\n"], { type: "text/plain" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `transcript-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.txt`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  window.echostream.lastDownload = url; // kept, so that it can be read back (tests)
}

window.echostream = { levelDb: -Infinity, lagMs: null, info: null, clock };
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("upload-file").addEventListener("change", () => { $("upload").disabled = !$("upload-file").files.length; });
$("upload").addEventListener("click", upload);
$("copy").addEventListener("click", copy);
$("download").addEventListener("click", download);
$("clear").addEventListener("click", () => transcript.clear());
showInfo().then(() => { document.body.dataset.ready = "true"; }); // the page works from here on
