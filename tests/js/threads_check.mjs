// Threads, edits and reactions with matrix-js-sdk's own thread support (threadSupport:
// true, as Element runs it). Driven by tests/test_js_sdk.py; run with the Node 22 from
// node_modules/node/bin/node.
//
//   node threads_check.mjs '<json config>'
//
// config: { baseUrl, user, password, roomId, peer, timeoutMs }   -- user A and room as in
//   sync_check.mjs; after READY the Python side (as the peer) sends, in this order, a root
//   message (body "root"), a thread reply to it, an edit of the root (new body "edited
//   root") and a 👍 reaction to the root.
//
// Phase 1, a live client: it must see the thread (with the peer's reply), the edit applied
// to the root and the reaction; then A replies in the thread, reacts to the peer's reply,
// edits its own reply and sends a (threaded) read receipt, all through the SDK.
// Phase 2, a second client of A starting from scratch: its initial sync must give it the
// thread (from the root's bundled aggregation), the edit (bundled), the thread list from
// /threads (all and participated) and the thread's events through /relations.
//
// Protocol on stdout and the request log: see harness.mjs.
//   READY {"userId":..., "deviceId":...}   phase 1 is syncing; the peer may send

import { createClient, ClientEvent, RelationType, ThreadEvent } from "matrix-js-sdk";
import { startHarness } from "./harness.mjs";

const config = JSON.parse(process.argv[2] ?? "{}");
const { summary, out, finish, loggingFetch, until } = startHarness(config);
const THREAD = "m.thread";

async function login() {
    const bare = createClient({ baseUrl: config.baseUrl, fetchFn: loggingFetch });
    return bare.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: config.user },
        password: config.password,
    });
}

async function startThreadedClient(login, name) {
    const client = createClient({
        baseUrl: config.baseUrl,
        accessToken: login.access_token,
        userId: login.user_id,
        deviceId: login.device_id,
        fetchFn: loggingFetch,
        threadSupport: true,
    });
    const prepared = new Promise((resolve, reject) => {
        client.on(ClientEvent.Sync, (state, prev, data) => {
            if (state === "PREPARED") resolve();
            if (state === "ERROR") process.stderr.write(`${name} sync ERROR: ${data?.error ?? ""}\n`);
        });
        setTimeout(() => reject(new Error(`${name} never reached PREPARED`)), config.timeoutMs ?? 30000);
    });
    await client.startClient({ threadSupport: true, initialSyncLimit: 30 });
    await prepared;
    return client;
}

function byBody(room, body) {
    return room.getLiveTimeline().getEvents().find((e) => e.getOriginalContent()?.body === body);
}

function reactionKeys(room, eventId) {
    const rel = room.relations.getChildEventsForEvent(eventId, RelationType.Annotation, "m.reaction");
    return (rel?.getSortedAnnotationsByKey() ?? []).map(([key, events]) => [key, events.size]);
}

function threadSummary(thread) {
    return {
        id: thread.id,
        length: thread.length,
        replies: thread.events.filter((e) => e.isRelation(THREAD)).map((e) => e.getId()),
        initialEventsFetched: thread.initialEventsFetched,
    };
}

async function phaseOne(client) {
    const room = client.getRoom(config.roomId);
    if (room?.getMyMembership() !== "join") throw new Error("room not joined after PREPARED");
    const newThreads = [];
    room.on(ThreadEvent.New, (thread) => newThreads.push(thread.id));

    // What the peer sends after READY.
    const rootSeen = await until("root", () => {
        const root = byBody(room, "root");
        return root && { eventId: root.getId() };
    });
    const rootId = rootSeen.eventId;
    const peerReply = await until("threadFromPeer", () => {
        const thread = room.getThread(rootId);
        const reply = thread?.events.find((e) => e.isRelation(THREAD) && e.getSender() === config.peer);
        return reply && { ...threadSummary(thread), replyId: reply.getId() };
    });
    await until("edit", () => {
        const root = room.findEventById(rootId);
        const edit = root?.replacingEvent();
        return edit && root.getContent().body === "edited root" && { editId: edit.getId(), body: root.getContent().body };
    });
    await until("reaction", () => {
        const keys = reactionKeys(room, rootId);
        return keys.some(([key]) => key === "👍") && { keys };
    });
    summary.events.newThreads = newThreads;

    // A takes part through the SDK.
    const mine = await client.sendMessage(config.roomId, rootId, { msgtype: "m.text", body: "reply from A" });
    await client.sendEvent(config.roomId, rootId, "m.reaction", {
        "m.relates_to": { rel_type: RelationType.Annotation, event_id: peerReply.replyId, key: "🎉" },
    });
    const edit = await client.sendEvent(config.roomId, rootId, "m.room.message", {
        msgtype: "m.text",
        body: "* reply from A, edited",
        "m.new_content": { msgtype: "m.text", body: "reply from A, edited" },
        "m.relates_to": { rel_type: RelationType.Replace, event_id: mine.event_id },
    });
    const thread = room.getThread(rootId);
    const myReply = await until("ownReplyInThread", () => {
        const ev = thread.findEventById(mine.event_id);
        return ev && ev.replacingEvent() && { eventId: ev.getId(), body: ev.getContent().body };
    });
    await client.sendReadReceipt(thread.findEventById(mine.event_id));
    await until("ownReactionSeen", () => reactionKeys(room, peerReply.replyId).some(([k]) => k === "🎉")
        && { keys: reactionKeys(room, peerReply.replyId) });
    summary.phaseOne = { rootId, peerReplyId: peerReply.replyId, myReplyId: myReply.eventId,
                         myEditId: edit.event_id, thread: threadSummary(thread),
                         threads: room.getThreads().map((t) => t.id) };
    return summary.phaseOne;
}

async function phaseTwo(login, expected) {
    const client = await startThreadedClient(login, "second client");
    const room = client.getRoom(config.roomId);
    const root = room.findEventById(expected.rootId);
    if (!root) throw new Error("the root is not in the second client's timeline");
    const bundled = root.getServerAggregatedRelation(THREAD);
    await until("threadFromInitialSync", () => {
        const thread = room.getThread(expected.rootId);
        return thread?.initialEventsFetched && thread.length >= 2 && threadSummary(thread);
    });
    await room.createThreadsTimelineSets();
    await room.fetchRoomThreads();
    const listed = room.threadsTimelineSets.map((set) => set.getLiveTimeline().getEvents().map((e) => e.getId()));
    // Walk the thread's timeline back to its start through /relations.
    const thread = room.getThread(expected.rootId);
    while (await client.paginateEventTimeline(thread.liveTimeline, { backwards: true, limit: 1 })) {
        // one event per page, until the root
    }
    summary.phaseTwo = {
        bundledThread: bundled ? { count: bundled.count, latest: bundled.latest_event?.event_id,
                                   participated: bundled.current_user_participated } : null,
        rootBody: root.getContent().body,
        rootReplacedBy: root.replacingEventId() ?? null,
        threadListAll: listed[0] ?? [],
        threadListParticipated: listed[1] ?? [],
        thread: threadSummary(thread),
        threadTimeline: thread.liveTimeline.getEvents().map((e) => [e.getId(), e.getType(), e.getRelation()?.rel_type ?? null]),
        reactionsOnRoot: reactionKeys(room, expected.rootId),
    };
    client.stopClient();
}

async function main() {
    for (const key of ["baseUrl", "user", "password", "roomId", "peer"]) {
        if (!config[key]) throw new Error(`config.${key} is required`);
    }
    const firstLogin = await login();
    const first = await startThreadedClient(firstLogin, "first client");
    out("READY " + JSON.stringify({ userId: first.getUserId(), deviceId: first.getDeviceId() }));
    const expected = await phaseOne(first);
    first.stopClient();
    await phaseTwo(await login(), expected);
}

main().then(() => finish(0), (err) => finish(1, err));
