// Unread notification counts and rate-limit retries as matrix-js-sdk sees them, with the
// SDK's own sync loop. Driven by tests/test_js_sdk_notifications.py.
//
//   node unread_check.mjs '{"baseUrl", "user", "password", "timeoutMs"}'
//
// After READY, commands arrive on stdin, one JSON object a line; each answers one line:
//   {"cmd": "wait", "roomId", "total", "highlight", "threadId"?, "threadTotal"?}
//       -> OK {...counts}   once room.getUnreadNotificationCount() (and the thread's) match
//       -> TIMEOUT {...counts}
//   {"cmd": "read", "roomId", "eventId", "threadId"?} -> DONE  (client.sendReadReceipt, or
//                                        client.sendReceipt with a thread_id: threaded)
//   {"cmd": "send", "roomId", "count", "prefix"} -> SENT [event ids] | FAILED "error"
//       (count messages at once through the SDK's queue, which retries 429s itself)
//   {"cmd": "quit"}
// Every HTTP status the SDK met is counted; the last line is RESULT {...}.

import readline from "node:readline";
import { createClient, ClientEvent, MatrixEvent, NotificationCountType, ReceiptType } from "matrix-js-sdk";

for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
    console[level] = (...args) => process.stderr.write(`[sdk ${level}] ${args.map(String).join(" ")}\n`);
}

const config = JSON.parse(process.argv[2] ?? "{}");
const timeoutMs = config.timeoutMs ?? 30000;
const statuses = {};

function out(line) {
    process.stdout.write(line + "\n");
}

async function countingFetch(input, init = {}) {
    const res = await fetch(input, init);
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    return res;
}

function counts(client, roomId, threadId) {
    const room = client.getRoom(roomId);
    if (!room) return null;
    const c = {
        total: room.getUnreadNotificationCount(NotificationCountType.Total),
        highlight: room.getUnreadNotificationCount(NotificationCountType.Highlight),
        roomOnly: room.getRoomUnreadNotificationCount(NotificationCountType.Total),
    };
    if (threadId) c.threadTotal = room.getThreadUnreadNotificationCount(threadId, NotificationCountType.Total) ?? 0;
    return c;
}

function matches(c, cmd) {
    if (!c) return false;
    if (c.total !== cmd.total || c.highlight !== cmd.highlight) return false;
    return cmd.threadId === undefined || c.threadTotal === cmd.threadTotal;
}

async function waitCounts(client, cmd) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
        const c = counts(client, cmd.roomId, cmd.threadId);
        if (matches(c, cmd)) return out("OK " + JSON.stringify(c));
        await new Promise((resolve) => {
            const done = () => { client.off(ClientEvent.Sync, done); resolve(); };
            client.on(ClientEvent.Sync, done);
            setTimeout(done, 200);
        });
    }
    out("TIMEOUT " + JSON.stringify(counts(client, cmd.roomId, cmd.threadId)));
}

async function main() {
    const login = await createClient({ baseUrl: config.baseUrl, fetchFn: countingFetch }).loginRequest({
        type: "m.login.password", identifier: { type: "m.id.user", user: config.user }, password: config.password,
    });
    const client = createClient({
        baseUrl: config.baseUrl, accessToken: login.access_token, userId: login.user_id,
        deviceId: login.device_id, fetchFn: countingFetch,
    });
    const prepared = new Promise((resolve) => client.on(ClientEvent.Sync, (s) => s === "PREPARED" && resolve()));
    // Without threadSupport: with it the SDK loads threads through /relations, which this
    // branch does not serve yet; thread counts are read from /sync either way.
    await client.startClient();
    await prepared;
    out("READY " + JSON.stringify({ userId: login.user_id }));

    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
        const cmd = JSON.parse(line);
        if (cmd.cmd === "quit") break;
        if (cmd.cmd === "wait") {
            await waitCounts(client, cmd);
        } else if (cmd.cmd === "read") {
            let event = client.getRoom(cmd.roomId)?.findEventById(cmd.eventId);
            if (!event) event = new MatrixEvent(await client.fetchRoomEvent(cmd.roomId, cmd.eventId));
            if (cmd.threadId) {
                // A threaded receipt, as the SDK sends it with thread support on.
                await client.sendReceipt(event, ReceiptType.Read, { thread_id: cmd.threadId }, true);
            } else {
                await client.sendReadReceipt(event);
            }
            out("DONE");
        } else if (cmd.cmd === "send") {
            try {
                const sends = [];
                for (let i = 0; i < cmd.count; i++) {
                    sends.push(client.sendTextMessage(cmd.roomId, `${cmd.prefix}${i}`));
                }
                out("SENT " + JSON.stringify((await Promise.all(sends)).map((r) => r.event_id)));
            } catch (err) {
                out("FAILED " + JSON.stringify(String(err?.stack ?? err)));
            }
        }
    }
    client.stopClient();
    out("RESULT " + JSON.stringify({ ok: true, statuses }));
    process.stdout.write("", () => process.exit(0));
}

main().catch((err) => {
    out("RESULT " + JSON.stringify({ ok: false, error: String(err?.stack ?? err), statuses }));
    process.stdout.write("", () => process.exit(1));
});
