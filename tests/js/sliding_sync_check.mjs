// matrix-js-sdk's own sliding sync (MSC4186: its SlidingSync class, the SlidingSyncSdk
// loop, with rust crypto for the e2ee and to_device extensions) against the homeserver.
// Driven by tests/test_sliding_sync_js.py; run with the Node 22 from node_modules.
//
// config: { baseUrl, user, password, roomsNewestFirst: [...], bottomRoom, peer, timeoutMs }
//
// Steps, each awaited from what the SDK emits:
//   1. first window [0, 4]: PREPARED with exactly the 5 newest rooms, list count = all rooms
//   2. scrolling the window to [0, 99]: every room arrives
//   3. a room subscription with a full timeline on the bottom room: its create event arrives
//   READY {"deviceId"}: the Python side then makes the peer send a message in the bottom
//      room, invite us to a new room, type, send a receipt, send us a to-device message and
//      log in a new device
//   4. each of those is seen through the SDK: the message (live) with the room bumped to the
//      top by bump_stamp, the invite, typing, the receipt, the to-device event, and the
//      peer in an e2ee device_lists.changed

import { createClient, ClientEvent, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";
import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";
import { startHarness } from "./harness.mjs";

const config = JSON.parse(process.argv[2] ?? "{}");
const { summary, out, finish, loggingFetch, waitFor, until } = startHarness(config);
const PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

// What the server answered, as the SDK does not keep it: extensions seen, device lists.
const seen = { extensions: new Set(), deviceListsChanged: new Set(), listCounts: [] };
async function watchingFetch(input, init = {}) {
    const res = await loggingFetch(input, init);
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    if (url.pathname === PATH && res.status === 200) {
        const body = await res.clone().json();
        for (const [name, ext] of Object.entries(body.extensions ?? {})) {
            seen.extensions.add(name);
            for (const u of ext?.device_lists?.changed ?? []) seen.deviceListsChanged.add(u);
        }
        if (body.lists?.all) seen.listCounts.push(body.lists.all.count);
    }
    return res;
}

async function main() {
    const { baseUrl, password, peer, bottomRoom } = config;
    const loginClient = createClient({ baseUrl, fetchFn: loggingFetch });
    const login = await loginClient.loginRequest({
        type: "m.login.password", identifier: { type: "m.id.user", user: config.user }, password,
    });
    const client = createClient({
        baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id,
        fetchFn: watchingFetch,
    });
    await client.initRustCrypto({ useIndexedDB: false });

    const requiredState = [["m.room.create", ""], ["m.room.name", ""], ["m.room.member", "$LAZY"],
                           ["m.room.member", "$ME"], ["m.room.encryption", ""]];
    const lists = new Map([["all", { ranges: [[0, 4]], timeline_limit: 1, required_state: requiredState }]]);
    const slidingSync = new SlidingSync(baseUrl, lists,
        { timeline_limit: 50, required_state: [["*", "*"]] }, client, 5000);

    const prepared = waitFor("prepared", (done) => {
        client.on(ClientEvent.Sync, (state) => { if (state === "PREPARED") done({ state }); });
    });
    await client.startClient({ slidingSync });
    await prepared;

    // 1. First window.
    const names = () => client.getRooms().filter((r) => r.getMyMembership() === "join").map((r) => r.roomId);
    summary.firstWindow = names().sort();
    summary.firstCount = slidingSync.getListData("all")?.joinedCount;

    // 2. Scrolling.
    slidingSync.setListRanges("all", [[0, 99]]);
    await until("scrolled", () => config.roomsNewestFirst.every((id) => client.getRoom(id))
        && { rooms: names().length });

    // 3. A subscription with a full timeline.
    slidingSync.modifyRoomSubscriptions(new Set([bottomRoom]));
    await until("subscribed", () => {
        const events = client.getRoom(bottomRoom)?.getLiveTimeline().getEvents() ?? [];
        return events.some((e) => e.getType() === "m.room.create") && { events: events.length };
    });

    const stampsBefore = Object.fromEntries(config.roomsNewestFirst.map(
        (id) => [id, client.getRoom(id)?.getBumpStamp() ?? null]));
    const message = waitFor("message", (done) => {
        client.on(RoomEvent.Timeline, (event, room, toStart, removed, data) => {
            if (toStart || removed || !data?.liveEvent || room?.roomId !== bottomRoom) return;
            if (event.getSender() === peer && event.getType() === "m.room.message") {
                done({ eventId: event.getId(), body: event.getContent().body });
            }
        });
    });
    const typing = waitFor("typing", (done) => {
        client.on(RoomMemberEvent.Typing, (event, member) => {
            if (member.roomId === bottomRoom && member.userId === peer && member.typing) done({ userId: peer });
        });
    });
    const receipt = waitFor("receipt", (done) => {
        client.on(RoomEvent.Receipt, (event, room) => {
            if (room.roomId !== bottomRoom) return;
            for (const [eventId, byType] of Object.entries(event.getContent())) {
                if (byType?.["m.read"]?.[peer] && eventId === config.receiptEventId) done({ eventId });
            }
        });
    });
    const toDevice = waitFor("toDevice", (done) => {
        client.on(ClientEvent.ToDeviceEvent, (event) => {
            if (event.getType() === "org.example.ping") done({ sender: event.getSender(), content: event.getContent() });
        });
    });
    out("READY " + JSON.stringify({ deviceId: login.device_id, userId: login.user_id }));

    await message;
    await typing;
    await receipt;
    await toDevice;
    await until("invite", () => {
        const invited = client.getRooms().filter((r) => r.getMyMembership() === "invite");
        return invited.length > 0 && { roomId: invited[0].roomId, name: invited[0].name };
    });
    await until("bumped", () => {
        const stamp = client.getRoom(bottomRoom)?.getBumpStamp();
        const others = config.roomsNewestFirst.filter((id) => id !== bottomRoom)
            .map((id) => client.getRoom(id)?.getBumpStamp() ?? 0);
        return stamp > Math.max(...others) && { before: stampsBefore[bottomRoom], after: stamp };
    });
    await until("deviceListChanged", () => seen.deviceListsChanged.has(peer) && { user: peer });
    summary.extensions = [...seen.extensions].sort();
    summary.listCounts = seen.listCounts;
    client.stopClient();
    finish(0);
}

main().catch((err) => finish(1, err));
