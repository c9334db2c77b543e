// 16 kHz 16-bit PCM from the browser's float audio, shared by the AudioWorklet and the
// ScriptProcessor fallback.

export const TARGET_RATE = 16000;

// Downsamples by averaging the input samples that fall into each output sample's period (a box
// low-pass, enough for speech), keeping its state between blocks so a stream has no seams.
export class Pcm16Downsampler {
  constructor(inputRate, outputRate = TARGET_RATE) {
    if (inputRate < outputRate) {
      throw new Error(`audio runs at ${inputRate} Hz, below ${outputRate} Hz`);
    }
    this.ratio = inputRate / outputRate;
    this.sum = 0;
    this.count = 0;
    this.position = 0; // input samples seen
    this.next = this.ratio; // input position where the next output sample ends
  }

  // Float32Array in [-1, 1] -> Int16Array at the output rate.
  process(input) {
    const out = new Int16Array(Math.ceil(input.length / this.ratio) + 1);
    let n = 0;
    for (let i = 0; i < input.length; i++) {
      this.sum += input[i];
      this.count += 1;
      this.position += 1;
      if (this.position >= this.next) {
        const v = Math.max(-1, Math.min(1, this.sum / this.count));
        out[n++] = Math.round(v * 32767);
        this.sum = 0;
        this.count = 0;
        this.next += this.ratio;
      }
    }
    return out.subarray(0, n);
  }
}

// Collects Int16Array pieces and hands them on in blocks of `blockSamples`.
export class Pcm16Blocks {
  constructor(blockSamples, onBlock) {
    this.block = new Int16Array(blockSamples);
    this.filled = 0;
    this.onBlock = onBlock;
  }

  push(samples) {
    let offset = 0;
    while (offset < samples.length) {
      const n = Math.min(samples.length - offset, this.block.length - this.filled);
      this.block.set(samples.subarray(offset, offset + n), this.filled);
      this.filled += n;
      offset += n;
      if (this.filled === this.block.length) {
        this.onBlock(this.block.slice());
        this.filled = 0;
      }
    }
  }

  flush() {
    if (this.filled > 0) {
      this.onBlock(this.block.slice(0, this.filled));
      this.filled = 0;
    }
  }
}
