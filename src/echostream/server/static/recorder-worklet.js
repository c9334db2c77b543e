// AudioWorklet processor: microphone audio -> 100 ms blocks of 16 kHz int16, posted to the page.
import { Pcm16Blocks, Pcm16Downsampler, TARGET_RATE } from "./pcm.js";

class Pcm16Recorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.downsampler = new Pcm16Downsampler(sampleRate, TARGET_RATE);
    this.blocks = new Pcm16Blocks(TARGET_RATE / 10, (block) => {
      this.port.postMessage(block, [block.buffer]);
    });
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.blocks.flush();
    };
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.blocks.push(this.downsampler.process(channel));
    return true;
  }
}

registerProcessor("pcm16-recorder", Pcm16Recorder);
