// Test fixture: one switchboard, the test page server and one Chromium per
// test; everything is torn down afterwards, and a failure carries the pages'
// state and the server log tail.
import { launchChromium, Participant, servePage } from './browser.js';
import { Switchboard, waitFor } from './server.js';

export function callTest(opts, body) {
  return async (t) => {
    const server = new Switchboard(opts);
    const participants = [];
    let page = null;
    let chromium = null;
    try {
      await server.start();
      page = await servePage(server);
      chromium = await launchChromium();
      const open = async (name) => {
        const p = await Participant.open(chromium.browser, page.url, name);
        participants.push(p);
        return p;
      };
      await body({ t, server, open });
      for (const p of participants) {
        const errors = await p.errors().catch(() => []);
        if (errors.length) throw new Error(`${p.name}'s page reported signaling errors: ${errors.join('\n')}`);
      }
    } catch (e) {
      const pages = {};
      for (const p of participants) pages[p.name] = { ...(await p.describe()), console: p.console.slice(-20) };
      e.message = `${e.message}\n--- pages ---\n${JSON.stringify(pages, null, 1)}\n--- switchboard log (tail) ---\n${server.logs.slice(-5000)}`;
      throw e;
    } finally {
      for (const p of participants) await p.close();
      if (chromium) await chromium.close();
      if (page) await page.close();
      await server.stop();
    }
  };
}

// Waits until `viewer` has received a push of `type` matching `pred`.
export function expectPush(viewer, type, pred, timeoutMs = 15000) {
  return waitFor(
    `${viewer.name} to receive ${type}`,
    async () => (await viewer.events(type)).find(pred),
    { timeoutMs, describe: async () => ({ [type]: await viewer.events(type).catch(() => []), page: await viewer.describe() }) },
  );
}
