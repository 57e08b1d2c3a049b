import type { TransportEndpoint } from 'centrifuge';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Switchboard, defaultTransports, withEmulationEndpoint } from '../src/client.js';
import { FakeEnvironment } from './fakes.js';

describe('transport fallback', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('defaultTransports lists WebSocket, HTTP-streaming and SSE of the page origin', () => {
    vi.stubGlobal('location', new URL('https://sb.example.org:8443/room#x'));
    expect(defaultTransports()).toEqual([
      { transport: 'websocket', endpoint: 'wss://sb.example.org:8443/connection/websocket' },
      { transport: 'http_stream', endpoint: 'https://sb.example.org:8443/connection/http_stream' },
      { transport: 'sse', endpoint: 'https://sb.example.org:8443/connection/sse' },
    ]);
  });

  it('points the emulation endpoint at the server of the emulated transports', () => {
    const list: TransportEndpoint[] = [
      { transport: 'websocket', endpoint: 'ws://127.0.0.1:9000/connection/websocket' },
      { transport: 'sse', endpoint: 'http://127.0.0.1:9000/connection/sse' },
    ];
    expect(withEmulationEndpoint(list, { token: 't' })).toEqual({ token: 't', emulationEndpoint: 'http://127.0.0.1:9000/emulation' });
    expect(withEmulationEndpoint(list, { emulationEndpoint: 'http://other/emu' }).emulationEndpoint).toBe('http://other/emu');
    expect(withEmulationEndpoint([list[0]], {})).toEqual({});
    const sb = new Switchboard(list, { environment: new FakeEnvironment() });
    // centrifuge-js keeps its resolved options in _config.
    expect((sb.centrifuge as unknown as { _config: { emulationEndpoint: string } })._config.emulationEndpoint).toBe(
      'http://127.0.0.1:9000/emulation',
    );
  });
});
