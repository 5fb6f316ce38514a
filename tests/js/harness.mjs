// The parts every check script shares: stdout kept for the protocol lines, a logging
// fetch, waits with a timeout, and the final RESULT line. Driven by tests/test_js_sdk.py.
//
// Protocol on stdout (one line each, nothing else is written there):
//   READY {...}    when the script is ready for the Python side to act
//   RESULT {...}   the JSON summary, last line; exit code 0 on success
// Every HTTP request the SDK makes is logged to stderr as `HTTP {"method","path","status",...}`
// and is also listed in the summary's "requests".

export function startHarness(config) {
    // The SDK logs through console.*: keep stdout for the protocol lines above.
    for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
        console[level] = (...args) => process.stderr.write(`[sdk ${level}] ${args.map(String).join(" ")}\n`);
    }
    const timeoutMs = config.timeoutMs ?? 30000;
    const started = Date.now();
    const requests = [];
    const summary = { ok: false, requests, events: {} };

    function out(line) {
        process.stdout.write(line + "\n");
    }

    function finish(code, error) {
        if (error) summary.error = String(error?.stack ?? error);
        summary.ok = code === 0;
        summary.elapsedMs = Date.now() - started;
        out("RESULT " + JSON.stringify(summary));
        // Let stdout drain before exiting.
        process.stdout.write("", () => process.exit(code));
    }

    process.on("unhandledRejection", (err) => finish(3, `unhandled rejection: ${err?.stack ?? err}`));
    process.on("uncaughtException", (err) => finish(3, `uncaught exception: ${err?.stack ?? err}`));

    // Wraps fetch to record method, path, status (and errcode of failures) of every request.
    async function loggingFetch(input, init = {}) {
        const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
        const method = (init.method ?? (typeof input === "object" && input.method) ?? "GET").toUpperCase();
        const query = Object.fromEntries([...url.searchParams].filter(([k]) => k !== "access_token"));
        const entry = { method, path: url.pathname, query, t: Date.now() - started };
        try {
            const res = await fetch(input, init);
            entry.status = res.status;
            if (res.status >= 400) {
                try {
                    const body = await res.clone().json();
                    entry.errcode = body?.errcode;
                    entry.error = body?.error;
                } catch {
                    entry.errcode = null;
                }
            }
            return res;
        } catch (err) {
            entry.status = "network-error";
            entry.error = String(err);
            throw err;
        } finally {
            entry.ms = Date.now() - started - entry.t;
            requests.push(entry);
            process.stderr.write("HTTP " + JSON.stringify(entry) + "\n");
        }
    }

    function waitFor(name, register) {
        // register(resolve) attaches listeners and calls resolve(detail) when seen.
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name}`)), timeoutMs);
            register((detail) => {
                clearTimeout(timer);
                summary.events[name] = { ...detail, atMs: Date.now() - started };
                resolve(detail);
            });
        });
    }

    // Polls `check` (which returns a detail object once satisfied, else a falsy value).
    function until(name, check, everyMs = 50) {
        return waitFor(name, (done) => {
            const poll = () => {
                const detail = check();
                if (detail) done(detail);
                else setTimeout(poll, everyMs);
            };
            poll();
        });
    }

    return { summary, requests, out, finish, loggingFetch, waitFor, until, timeoutMs, started };
}
