// The microphone page: records, streams 16 kHz int16 PCM over the WebSocket protocol, and shows
// each segment's partial text (grey) until its final text (black) replaces it.
import { Pcm16Blocks, Pcm16Downsampler, TARGET_RATE } from "./pcm.js";

const startButton = document.getElementById("start");
const stopButton = document.getElementById("stop");
const statusLine = document.getElementById("status");
const transcript = document.getElementById("transcript");

let session = null; // {ws, context, microphone, node, flush}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function setStatus(text, failed = false) {
  statusLine.textContent = text;
  statusLine.className = failed ? "failed" : "";
}

// The grey line of the segment being recognised; created on demand, last in the transcript.
function partialLine() {
  let line = transcript.querySelector(".partial");
  if (!line) {
    line = document.createElement("p");
    line.className = "partial";
    transcript.appendChild(line);
  }
  return line;
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
    partialLine().textContent = JSON.parse(message.nbest)[0].sentence;
  } else if (message.type === "final_result") {
    const sentence = JSON.parse(message.nbest)[0].sentence;
    const line = partialLine();
    line.className = "final";
    line.textContent = sentence;
    if (!sentence) line.remove();
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
  startButton.disabled = true;
  setStatus("starting…");
  try {
    const microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    const context = new AudioContext();
    await context.resume();
    const ws = new WebSocket(socketUrl());
    ws.binaryType = "arraybuffer";
    const waiting = []; // audio recorded before the socket opened
    const send = (block) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(block.buffer);
      else if (ws.readyState === WebSocket.CONNECTING) waiting.push(block);
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({
        signal: "start", nbest: 1, continuous_decoding: true, sample_rate: TARGET_RATE,
      }));
      for (const block of waiting.splice(0)) ws.send(block.buffer);
    };
    ws.onmessage = onMessage;
    ws.onerror = () => setStatus("connection error", true);
    ws.onclose = (event) => {
      if (event.code !== 1000 && statusLine.className !== "failed") {
        setStatus(`connection closed (code ${event.code})`, true);
      }
      stopAudio();
      startButton.disabled = false;
      stopButton.disabled = true;
    };
    const audio = await connectAudio(context, microphone, send);
    session = { ws, context, microphone, ...audio };
    stopButton.disabled = false;
  } catch (error) {
    setStatus(`cannot record: ${error.message || error}`, true);
    stopAudio();
    startButton.disabled = false;
  }
}

function stopAudio() {
  if (!session) return;
  session.microphone.getTracks().forEach((track) => track.stop());
  session.node.disconnect();
  session.context.close();
  session = null;
}

function stop() {
  if (!session) return;
  stopButton.disabled = true;
  setStatus("finishing…");
  session.flush();
  const ws = session.ws;
  // Let the last block leave the audio thread before the end signal.
  setTimeout(() => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ signal: "end" }));
    stopAudio();
  }, 50);
}

startButton.addEventListener("click", start);
stopButton.addEventListener("click", stop);
document.body.dataset.ready = "true"; // the page works from here on
