// Leveled logger: one line per event, `time LEVEL message key=value…`, to stderr
// (or JSON lines with the json format). Callers pass fields, never secrets.

export type Level = "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";
export type Fields = Record<string, unknown>;

export const LEVELS: readonly Level[] = ["debug", "info", "warn", "error"];
const RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Where finished lines go; tests swap it to capture output. */
export type Sink = (line: string, level: Level) => void;

const encoder = new TextEncoder();
const stderrSink: Sink = (line) => {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // stderr closed: nothing sensible left to do with a log line.
  }
};

let threshold = RANK.info;
let format: LogFormat = "text";
let sink: Sink = stderrSink;

/** Is `s` one of the level names? */
export function isLevel(s: string): s is Level {
  return (LEVELS as readonly string[]).includes(s);
}

/** Sets the lowest level that is written. */
export function setLevel(level: Level): void {
  threshold = RANK[level];
}

/** Chooses `text` (default) or `json` lines. */
export function setFormat(f: LogFormat): void {
  format = f;
}

/** Replaces the output; returns the previous sink so tests can restore it. */
export function setSink(s: Sink): Sink {
  const previous = sink;
  sink = s;
  return previous;
}

/**
 * Sends log lines to a file (appended, parent dir created) instead of stderr: how a Windows
 * service, which has no console, keeps its log (`USEPOD_AGENT_LOG_FILE`).
 */
export function logToFile(path: string): void {
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  if (dir && dir !== path) Deno.mkdirSync(dir, { recursive: true });
  const file = Deno.openSync(path, { append: true, create: true });
  sink = (line) => {
    try {
      file.writeSync(encoder.encode(line + "\n"));
    } catch {
      // disk full or file gone: keep running without the log line.
    }
  };
}

/** True when a line at `level` would be written (guards costly debug fields). */
export function enabled(level: Level): boolean {
  return RANK[level] >= threshold;
}

function renderValue(v: unknown): string {
  if (v instanceof Error) v = v.message;
  if (typeof v === "string") return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v === undefined) return "-";
  if (typeof v === "object" && v !== null) return JSON.stringify(v);
  return String(v);
}

/**
 * One JSON object: `time`, `level`, `msg`, then the fields (an Error as its message; a field
 * named like one of the first three gets a leading `_`). Never throws: a value JSON cannot hold
 * (a bigint, a cycle) is written as its string.
 */
function jsonLine(time: string, level: Level, msg: string, fields?: Fields): string {
  const rec: Fields = { time, level, msg };
  for (const [k, v] of Object.entries(fields ?? {})) {
    const key = k === "time" || k === "level" || k === "msg" ? `_${k}` : k;
    rec[key] = v instanceof Error ? v.message : v;
  }
  try {
    return JSON.stringify(rec, (_k, v) => typeof v === "bigint" ? v.toString() : v);
  } catch {
    const safe: Record<string, string> = {};
    for (const [k, v] of Object.entries(rec)) safe[k] = typeof v === "string" ? v : String(v);
    return JSON.stringify(safe);
  }
}

function write(level: Level, msg: string, fields?: Fields): void {
  if (RANK[level] < threshold) return;
  const time = new Date().toISOString();
  let line: string;
  if (format === "json") {
    line = jsonLine(time, level, msg, fields);
  } else {
    line = `${time} ${level.toUpperCase().padEnd(5)} ${msg}`;
    for (const [k, v] of Object.entries(fields ?? {})) line += ` ${k}=${renderValue(v)}`;
  }
  sink(line, level);
}

/**
 * The logger.
 *
 * @example
 * ```ts
 * log.info("job done", { job_id: "…", ms: 812, tokens: 23 });
 * ```
 */
export const log = {
  debug: (msg: string, fields?: Fields) => write("debug", msg, fields),
  info: (msg: string, fields?: Fields) => write("info", msg, fields),
  warn: (msg: string, fields?: Fields) => write("warn", msg, fields),
  error: (msg: string, fields?: Fields) => write("error", msg, fields),
};
