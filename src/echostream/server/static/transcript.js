// The transcript list: one grey line for the segment being recognised, black lines for final
// results and for the segments of uploaded files, each with its time span; and its text export.

export function clock(ms) {
  const s = Math.max(0, ms) / 1000;
  const minutes = Math.floor(s / 60);
  return `${minutes}:${(s - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

export class Transcript {
  constructor(list, onChange) {
    this.list = list;
    this.onChange = onChange;
  }

  line(kind, time, text) {
    const item = document.createElement("li");
    item.className = kind;
    const when = document.createElement("span");
    when.className = "time";
    when.textContent = time;
    const words = document.createElement("span");
    words.className = "text";
    words.textContent = text;
    item.append(when, words);
    return item;
  }

  // The grey line of the live segment, created on demand, last in the list.
  partial(text, audioMs) {
    let item = this.list.querySelector(".partial");
    if (!item) {
      item = this.line("partial", "", "");
      this.list.appendChild(item);
    }
    item.querySelector(".time").textContent = `… ${clock(audioMs)}`;
    item.querySelector(".text").textContent = text;
  }

  // A final result replaces the grey line; an empty one just removes it.
  final(sentence, words) {
    const item = this.list.querySelector(".partial");
    if (!sentence) {
      if (item) item.remove();
      return;
    }
    const span = words.length ? `${clock(words[0].start)} – ${clock(words[words.length - 1].end)}` : "";
    const line = this.line("final", span, sentence);
    if (item) item.replaceWith(line);
    else this.list.appendChild(line);
    this.onChange();
  }

  // The segments of an uploaded file, under a line naming it.
  file(name, reply) {
    this.list.querySelector(".partial")?.remove();
    this.list.appendChild(this.line("file heading", name, `(${reply.duration.toFixed(1)} s)`));
    for (const segment of reply.segments) {
      const span = `${clock(segment.start * 1000)} – ${clock(segment.end * 1000)}`;
      this.list.appendChild(this.line("file", span, segment.text));
    }
    this.onChange();
  }

  clear() {
    this.list.replaceChildren();
    this.onChange();
  }

  // Final lines and file segments as text, one per line: "[0:01.2 – 0:03.4] words".
  text() {
    return Array.from(this.list.querySelectorAll(".final, .file"))
      .map((item) => {
        const time = item.querySelector(".time").textContent;
        const words = item.querySelector(".text").textContent;
        return item.classList.contains("heading") ? `${time} ${words}` : `[${time}] ${words}`;
      })
      .join("\n");
  }

  get empty() {
    return this.list.querySelector(".final, .file") === null;
  }
}
