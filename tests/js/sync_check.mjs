// End-to-end check of the homeserver with matrix-js-sdk running its own sync loop.
// Driven by tests/test_js_sdk.py; run with the Node 22 from node_modules/node/bin/node.
//
//   node sync_check.mjs '<json config>'
//
// config: {
//   baseUrl, user (localpart or full id), password,      -- user A, already registered
//   roomId,                                              -- a room A is joined to
//   peer,                                                -- user B's full id
//   receiptEventId,                                      -- the event B will mark as read
//   messageBody,                                         -- body of the message B will send
//   crypto: false,                                       -- also initRustCrypto() (in-memory store)
//   timeoutMs: 30000                                     -- per wait
// }
//
// Protocol on stdout and the request log: see harness.mjs.
//   READY {"userId":..., "deviceId":...}   after the PREPARED sync state, with the room joined

import { createClient, ClientEvent, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";
import { startHarness } from "./harness.mjs";

const config = JSON.parse(process.argv[2] ?? "{}");
const { summary, requests, out, finish, loggingFetch, waitFor } = startHarness(config);

async function main() {
    const { baseUrl, password, roomId, peer } = config;
    for (const key of ["baseUrl", "user", "password", "roomId", "peer"]) {
        if (!config[key]) throw new Error(`config.${key} is required`);
    }

    // 1. Password login with a bare client, as an app's login screen would.
    const loginClient = createClient({ baseUrl, fetchFn: loggingFetch });
    const login = await loginClient.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: config.user },
        password,
        initial_device_display_name: "matrix-js-sdk e2e",
    });
    summary.login = { userId: login.user_id, deviceId: login.device_id };

    // 2. The real client, with its default start-up.
    const client = createClient({
        baseUrl,
        accessToken: login.access_token,
        userId: login.user_id,
        deviceId: login.device_id,
        fetchFn: loggingFetch,
    });
    if (config.crypto) {
        await client.initRustCrypto({ useIndexedDB: false });
    }

    // Listeners go on before startClient so nothing can be missed.
    const syncStates = [];
    client.on(ClientEvent.Sync, (state, prev, data) => {
        syncStates.push(state);
        if (state === "ERROR") {
            process.stderr.write(`sync ERROR: ${data?.error ?? ""}\n`);
        }
    });
    summary.syncStates = syncStates;

    const prepared = waitFor("prepared", (done) => {
        client.on(ClientEvent.Sync, (state) => {
            if (state === "PREPARED") done({ state });
        });
    });
    const message = waitFor("message", (done) => {
        client.on(RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
            if (toStartOfTimeline || removed || !data?.liveEvent) return;
            if (room?.roomId !== roomId || event.getSender() !== peer) return;
            if (event.getType() !== "m.room.message") return;
            if (config.messageBody && event.getContent().body !== config.messageBody) return;
            done({ eventId: event.getId(), body: event.getContent().body });
        });
    });
    const typing = waitFor("typing", (done) => {
        client.on(RoomMemberEvent.Typing, (event, member) => {
            if (member.roomId === roomId && member.userId === peer && member.typing) {
                done({ userId: member.userId, typing: member.typing });
            }
        });
    });
    const receipt = waitFor("receipt", (done) => {
        client.on(RoomEvent.Receipt, (event, room) => {
            if (room.roomId !== roomId) return;
            // The SDK also synthesizes receipts for the sender of every live event; those
            // point at the sender's own events, so a receipt from the peer on
            // receiptEventId (sent by someone else) can only have come from the server.
            for (const [eventId, byType] of Object.entries(event.getContent())) {
                if (config.receiptEventId && eventId !== config.receiptEventId) continue;
                const r = byType?.["m.read"]?.[peer];
                if (r) done({ eventId, ts: r.ts, threadId: r.thread_id ?? null });
            }
        });
    });

    await client.startClient();
    await prepared;

    const room = client.getRoom(roomId);
    const membership = room?.getMyMembership();
    if (membership !== "join") {
        throw new Error(`room ${roomId} not joined after PREPARED (membership: ${membership})`);
    }
    summary.room = {
        name: room.name,
        joinedMembers: room.getJoinedMembers().map((m) => m.userId).sort(),
        timelineLength: room.getLiveTimeline().getEvents().length,
    };
    if (config.crypto) {
        // What an app does next with crypto on: look at its own and a peer's keys (both
        // /keys/query), and the device keys upload the OlmMachine queued at start-up.
        const cryptoApi = client.getCrypto();
        const peerDevices = await cryptoApi.getUserDeviceInfo([peer], true);
        summary.crypto = {
            peerDevicesWithKeys: [...(peerDevices.get(peer)?.keys() ?? [])],
            ownCrossSigning: await cryptoApi.userHasCrossSigningKeys(undefined, true),
        };
        await waitFor("deviceKeysUploaded", (done) => {
            const check = () => {
                const r = requests.find((x) => x.path.endsWith("/keys/upload") && x.status === 200);
                if (r) done({ path: r.path });
                else setTimeout(check, 50);
            };
            check();
        });
        summary.crypto.ownDeviceKeys = await cryptoApi.getOwnDeviceKeys();
    }
    summary.startupRequests = requests.map(({ method, path, status, errcode }) => ({ method, path, status, errcode }));
    out("READY " + JSON.stringify({ userId: client.getUserId(), deviceId: client.getDeviceId() }));

    await Promise.all([message, typing, receipt]);
    summary.finalSyncState = client.getSyncState();
    client.stopClient();
}

main().then(() => finish(0), (err) => finish(1, err));
