import { build } from 'esbuild';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// The same build as build.mjs, into a temporary directory.
const dir = mkdtempSync(join(tmpdir(), 'switchboard-sdk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the bundle', () => {
  it('is one self-contained ES module exporting the SDK and centrifuge-js', async () => {
    const outfile = join(dir, 'switchboard.js');
    await build({ entryPoints: ['src/index.ts'], bundle: true, format: 'esm', platform: 'browser', target: ['es2020'], outfile, minify: true, logLevel: 'silent' });
    const code = readFileSync(outfile, 'utf8');
    // no imports left to resolve: the browser loads it as is
    expect(code).not.toMatch(/\bimport\s*[{*\w][^;]*from\s*["']/);
    expect(code).not.toMatch(/\brequire\(["']/);
    const mod = await import(pathToFileURL(outfile).href);
    for (const name of ['Switchboard', 'Room', 'OutgoingCall', 'IncomingCall', 'Centrifuge', 'Subscription', 'SIMULCAST_ENCODINGS', 'centrifugeSignaling']) {
      expect(mod[name], name).toBeDefined();
    }
    const sb = new mod.Switchboard('ws://127.0.0.1:1/connection/websocket', {
      environment: { createPeerConnection() {}, getUserMedia() {}, getDisplayMedia() {} },
    });
    expect(sb.centrifuge).toBeInstanceOf(mod.Centrifuge);
  });
});
