// Media with matrix-js-sdk as Element uses it: upload with client.uploadContent, then
// fetch the authenticated download and thumbnail URLs that client.mxcUrlToHttp builds,
// sending the access token in the Authorization header, and the legacy download URL
// without one. Driven by tests/test_media.py.
//
//   node media_check.mjs '<json config>'
//
// config: { baseUrl, user, password, fileBase64, contentType, fileName,
//           thumbWidth, thumbHeight, thumbMethod }
//
// Prints one line, `RESULT {...}` (base64 bodies and headers of what came back); exit
// code 0 on success.

import { createClient } from "matrix-js-sdk";

for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
    console[level] = (...args) => process.stderr.write(`[sdk ${level}] ${args.map(String).join(" ")}\n`);
}

const config = JSON.parse(process.argv[2] ?? "{}");
const summary = { ok: false };

function finish(code, error) {
    if (error) summary.error = String(error?.stack ?? error);
    summary.ok = code === 0;
    process.stdout.write("RESULT " + JSON.stringify(summary) + "\n", () => process.exit(code));
}

process.on("unhandledRejection", (err) => finish(3, `unhandled rejection: ${err?.stack ?? err}`));

async function fetchBytes(url, token) {
    const res = await fetch(url, token ? { headers: { Authorization: `Bearer ${token}` } } : {});
    const body = Buffer.from(await res.arrayBuffer());
    return {
        status: res.status,
        contentType: res.headers.get("content-type"),
        disposition: res.headers.get("content-disposition"),
        base64: body.toString("base64"),
    };
}

async function main() {
    const loginClient = createClient({ baseUrl: config.baseUrl });
    const login = await loginClient.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: config.user },
        password: config.password,
    });
    const client = createClient({
        baseUrl: config.baseUrl, accessToken: login.access_token, userId: login.user_id,
    });
    // Element switches to authenticated media when the server says it serves it.
    summary.v111 = await client.isVersionSupported("v1.11");
    summary.authMediaFlag = await client.doesServerSupportUnstableFeature("org.matrix.msc3916.stable");
    summary.mediaConfig = await client.getMediaConfig(true);

    const bytes = Buffer.from(config.fileBase64, "base64");
    const blob = new Blob([bytes], { type: config.contentType });
    const upload = await client.uploadContent(blob, { name: config.fileName, type: config.contentType });
    summary.contentUri = upload.content_uri;

    const downloadUrl = client.mxcUrlToHttp(upload.content_uri, undefined, undefined, undefined,
                                            false, true, true);
    summary.downloadUrl = downloadUrl;
    summary.download = await fetchBytes(downloadUrl, login.access_token);

    // The deprecated unauthenticated URL, as older clients build it (no token sent).
    summary.legacyUrl = client.mxcUrlToHttp(upload.content_uri, undefined, undefined, undefined,
                                            false, true, false);
    summary.legacy = await fetchBytes(summary.legacyUrl, null);

    const thumbUrl = client.mxcUrlToHttp(upload.content_uri, config.thumbWidth, config.thumbHeight,
                                         config.thumbMethod, false, true, true);
    summary.thumbnailUrl = thumbUrl;
    summary.thumbnail = await fetchBytes(thumbUrl, login.access_token);
    finish(0);
}

main().catch((err) => finish(1, err));
