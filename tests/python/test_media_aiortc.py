"""The SFU against a second, independent WebRTC stack: aiortc (Python).

Signaling goes over centrifuge-python RPCs (`rtc.join`, `rtc.answer`,
`rtc.publish`, `rtc.leave`) and the server's asynchronous `message` pushes,
as docs/MEDIA.md describes. Media is real: aiortc encodes a synthetic VP8
video and an Opus tone, the SFU forwards the RTP, and the receiving aiortc
peer decodes it.

centrifuge-python 0.7 has no event for asynchronous `message` pushes (it
drops them as unknown), so `RtcClient` hooks the SDK's push dispatch to
record them; everything else is the SDK as an app uses it.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import re
from typing import Any, Dict, List, Optional

import aiohttp
import aioice.ice
import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpsender import RTCRtpSender
from av import AudioFrame, VideoFrame
from centrifuge import Client
from centrifuge.exceptions import ReplyError

from helpers import ClientEvents, Recorder, Server

WIDTH, HEIGHT = 320, 240
VIDEO_FRAMES = 15  # decoded frames B must see (aiortc sends ~30 fps)
AUDIO_FRAMES = 25  # non-silent decoded 20 ms frames B must see
MEDIA_TIMEOUT = 30.0
SIGNAL_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch):
    """The dev server's media socket is on 127.0.0.1 (ICE-lite host
    candidate); aioice leaves loopback out of its host candidates, so point
    it at loopback only: the same candidates on any machine, with or
    without a network interface."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


# --- synthetic media ---------------------------------------------------------


class MovingVideo(VideoStreamTrack):
    """WIDTH x HEIGHT frames whose content changes every frame (a moving bar
    over a shifting colour), so the encoder produces real inter frames."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        img = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        img[:, :, 0] = (self.n * 3) % 256
        img[:, :, 1] = 128
        x = (self.n * 4) % WIDTH
        img[:, x : x + 16, :] = 255
        self.n += 1
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneAudio(MediaStreamTrack):
    """A 440 Hz tone, 48 kHz mono s16, 20 ms frames, paced in real time."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self) -> None:
        super().__init__()
        self.pts = 0
        self.start: Optional[float] = None

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        wait = self.start + self.pts / self.RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(self.SAMPLES) + self.pts) / self.RATE
        samples = (np.sin(2 * math.pi * 440 * t) * 12000).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.pts += self.SAMPLES
        return frame


# --- signaling client ----------------------------------------------------------


class RtcClient(Client):
    """centrifuge-python Client that also records asynchronous `message`
    pushes (the `rtc.*` events) into `pushes` as ("message", data)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pushes = Recorder()

    async def _process_reply(self, reply: Dict[str, Any]) -> None:
        push = reply.get("push")
        if not reply.get("id") and isinstance(push, dict) and "message" in push:
            self.pushes._add("message", self._decode_data(push["message"].get("data")))
            return
        await super()._process_reply(reply)


def msid_tracks(sdp: str) -> List[str]:
    """Track ids named by `a=msid:<stream> <track>` lines of active m-lines."""
    out = []
    for section in re.split(r"\r?\n(?=m=)", sdp)[1:]:
        first = section.splitlines()[0]
        if first.split()[1] == "0" or "a=inactive" in section:
            continue
        out += re.findall(r"^a=msid:\S+ (\S+)", section, flags=re.M)
    return out


class Participant:
    """One aiortc participant: a signaling connection, a subscriber peer
    (answers every server offer, decodes what arrives) and, when it
    publishes, a publisher peer."""

    def __init__(self, server: Server, user: str) -> None:
        self.server = server
        self.user = user
        self.events = ClientEvents()
        self.client = RtcClient(server.ws_url, token=server.token(user), events=self.events, timeout=10.0, proxy=None)
        self.sub_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pub_pc: Optional[RTCPeerConnection] = None
        self.room = ""
        self.id = ""
        self.join_result: Dict[str, Any] = {}
        self.answers = Recorder()  # ("answered", offer sdp) for every subscriber offer answered
        self.received = Recorder()  # ("video", (w, h)) / ("audio", peak) / ("track", id)
        self._tasks: List[asyncio.Task] = []
        self._offers_seen = 0

        @self.sub_pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.received._add("track", (track.kind, track.id))
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    @property
    def pushes(self) -> Recorder:
        return self.client.pushes

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                self.received._add("video", (frame.width, frame.height))
                # The sender's blue channel steps every frame: a live picture, not a frozen one.
                self.received._add("blue", int(frame.to_ndarray(format="bgr24")[:, :, 0].mean()))
            else:
                peak = int(np.abs(frame.to_ndarray()).max())
                self.received._add("audio", peak)

    async def connect(self) -> None:
        await self.client.connect()
        await self.events.wait("connected", timeout=SIGNAL_TIMEOUT)

    async def answer(self, sdp: str) -> None:
        await self.sub_pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.sub_pc.setLocalDescription(await self.sub_pc.createAnswer())
        await self.client.rpc("rtc.answer", {"room": self.room, "sdp": self.sub_pc.localDescription.sdp})
        self.answers._add("answered", sdp)

    async def join(self, room: str) -> Dict[str, Any]:
        self.room = room
        res = (await self.client.rpc("rtc.join", {"room": room})).data
        # Other engineers may change the default room mode; these tests need the SFU.
        assert res.get("mode", "sfu") == "sfu", f"rtc.join not in SFU mode: {res}"
        assert res["room"] == room and res["participant"], res
        assert res["offer"].startswith("v=0"), res
        self.id = res["participant"]
        self.join_result = res
        await self.answer(res["offer"])
        self._tasks.append(asyncio.ensure_future(self._answer_offers()))
        return res

    async def _answer_offers(self) -> None:
        """Answers every later `rtc.offer` push, one at a time, in order."""
        while True:
            offers = await self.pushes.collect(
                "message", self._offers_seen + 1, pred=lambda m: m.get("type") == "rtc.offer", timeout=3600
            )
            offer = offers[self._offers_seen]
            self._offers_seen += 1
            try:
                await self.answer(offer["sdp"])
            except Exception as e:  # noqa: BLE001 - shows up in the waits' reports
                self.answers._add("error", repr(e))
                raise

    async def publish(self) -> Dict[str, Any]:
        """Publishes the tone (Opus) and the moving picture (VP8)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pub_pc = pc
        audio = pc.addTransceiver(ToneAudio(), direction="sendonly")
        video = pc.addTransceiver(MovingVideo(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video")
        video.setCodecPreferences([c for c in caps.codecs if c.mimeType in ("video/VP8", "video/rtx")])
        await pc.setLocalDescription(await pc.createOffer())
        req = {
            "room": self.room,
            "sdp": pc.localDescription.sdp,
            "sources": {audio.mid: "microphone", video.mid: "camera"},
            "sizes": {video.mid: [WIDTH, HEIGHT]},
        }
        res = (await self.client.rpc("rtc.publish", req)).data
        assert res["sdp"].startswith("v=0"), res
        await pc.setRemoteDescription(RTCSessionDescription(sdp=res["sdp"], type="answer"))
        return res

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await pc.close()
        try:
            await self.client.disconnect()
        except Exception:  # noqa: BLE001 - teardown best effort
            pass


@pytest.fixture
async def people(server):
    made: List[Participant] = []

    async def make(user: str) -> Participant:
        p = Participant(server, user)
        made.append(p)
        await p.connect()
        return p

    yield make
    for p in made:
        await p.close()


async def sfu_room(server: Server, name: str) -> str:
    """Creates the room in SFU mode through the server API (the default
    mode, `auto`, would start peer-to-peer)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.post(
            f"{server.http_url}/api/room_create",
            json={"room": name, "mode": "sfu"},
            headers={"X-API-Key": server.api_key},
        ) as r:
            text = await r.text()
            assert r.status == 200, f"room_create -> {r.status}: {text}"
            body = json.loads(text)
            assert not body.get("error"), f"room_create -> {text}"
            assert body["result"]["room"]["mode"] == "sfu", body
    return name


async def call_a_to_b(server: Server, people, room: str):
    """A joins and publishes audio + video; B joins; returns (a, b, a's tracks)."""
    await sfu_room(server, room)
    a = await people("alice")
    b = await people("bob")
    await a.join(room)
    res_b = await b.join(room)
    assert a.id in res_b["participants"], res_b
    await a.pushes.wait("message", lambda m: m.get("type") == "rtc.participant_joined" and m["participant"] == b.id, timeout=SIGNAL_TIMEOUT)

    await a.publish()
    published = await b.pushes.collect(
        "message", 2, pred=lambda m: m.get("type") == "rtc.track_published", timeout=SIGNAL_TIMEOUT
    )
    tracks = {t["track"]["kind"]: t["track"] for t in published}
    assert set(tracks) == {"audio", "video"}, published
    assert all(t["participant"] == a.id for t in tracks.values()), published
    assert tracks["audio"]["source"] == "microphone" and tracks["video"]["source"] == "camera", published
    return a, b, tracks


# --- tests ---------------------------------------------------------------------


async def test_aiortc_publisher_to_aiortc_subscriber_decodes_audio_and_video(server, people):
    a, b, tracks = await call_a_to_b(server, people, "aiortc-media")

    # Both of A's tracks reach B's subscriber peer under the announced ids.
    got = await b.received.collect("track", 2, timeout=MEDIA_TIMEOUT)
    assert sorted(got) == sorted((k, t["id"]) for k, t in tracks.items()), (got, tracks)

    # ... and decode: video at the published size, audio carrying the tone.
    frames = await b.received.collect("video", VIDEO_FRAMES, timeout=MEDIA_TIMEOUT)
    assert all(size == (WIDTH, HEIGHT) for size in frames), frames
    # The sender steps the blue level by 3 a frame: over 30 frames a live
    # picture moves far (~90), a frozen one only by coding noise (< 10).
    blues = await b.received.collect("blue", 2 * VIDEO_FRAMES, timeout=MEDIA_TIMEOUT)
    assert max(blues) - min(blues) >= 30, f"decoded picture does not change: {blues}"
    loud = await b.received.collect("audio", AUDIO_FRAMES, pred=lambda peak: peak > 1000, timeout=MEDIA_TIMEOUT)
    assert len(loud) == AUDIO_FRAMES

    # Both subscriber peers and A's publisher connected through the SFU.
    assert b.sub_pc.connectionState == "connected"
    assert a.pub_pc is not None and a.pub_pc.connectionState == "connected"
    # The offer that carried A's tracks named them.
    assert any(set(t["id"] for t in tracks.values()) <= set(msid_tracks(o)) for o in b.answers.all("answered")), b.answers.all("answered")


async def test_aiortc_leave_tells_the_room_and_renegotiates(server, people):
    a, b, tracks = await call_a_to_b(server, people, "aiortc-leave")
    await b.received.collect("video", 3, timeout=MEDIA_TIMEOUT)  # media flowed before the leave
    mark = b.pushes.mark()
    answered_before = b.answers.mark()

    await a.client.rpc("rtc.leave", {"room": a.room})

    left = await b.pushes.wait(
        "message", lambda m: m.get("type") == "rtc.participant_left", timeout=SIGNAL_TIMEOUT, start=mark
    )
    assert left == {"type": "rtc.participant_left", "room": a.room, "participant": a.id, "reason": "left"}, left
    gone = await b.pushes.collect(
        "message", 2, pred=lambda m: m.get("type") == "rtc.track_unpublished", timeout=SIGNAL_TIMEOUT, start=mark
    )
    assert sorted(m["track"] for m in gone) == sorted(t["id"] for t in tracks.values()), gone
    assert all(m["participant"] == a.id and m["room"] == a.room for m in gone), gone

    # Renegotiation: B gets (and answers) new subscriber offers until one no
    # longer carries A's tracks (the SFU may remove them in more than one
    # offer: at most one offer is outstanding at a time).
    a_ids = {t["id"] for t in tracks.values()}
    final = await b.answers.wait(
        "answered", lambda sdp: not set(msid_tracks(sdp)) & a_ids, timeout=SIGNAL_TIMEOUT, start=answered_before
    )
    assert "m=audio" in final and "m=video" in final, final  # the m-lines stay, inactive or rejected
    # B's signaling connection and subscriber peer are still fine.
    assert b.sub_pc.connectionState == "connected"


def only_codec(sdp: str, kind: str, name: str) -> str:
    """The SDP with every `kind` m-line offering only one codec `name`
    (payload type 96): what a stack without the SFU's codecs would send."""
    head, *sections = re.split(r"\r\n(?=m=)", sdp.rstrip("\r\n"))
    out = [head]
    for sec in sections:
        lines = sec.split("\r\n")
        if lines[0].startswith(f"m={kind} "):
            parts = lines[0].split()
            lines = [" ".join(parts[:3] + ["96"])] + [
                ln for ln in lines[1:] if not re.match(r"a=(rtpmap|fmtp|rtcp-fb):", ln)
            ]
            lines.append(f"a=rtpmap:96 {name}/90000")  # attributes after c= (RFC 8866 order)
        out.append("\r\n".join(lines))
    return "\r\n".join(out) + "\r\n"


async def test_aiortc_unsupported_codec_and_garbage_sdp_are_refused(server, people):
    room = await sfu_room(server, "aiortc-bad")
    a = await people("alice")
    await a.join(room)

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(MovingVideo(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        munged = only_codec(sdp, "video", "X-FAKE")
        assert "VP8" not in munged and "X-FAKE/90000" in munged, munged

        with pytest.raises(ReplyError) as e:
            await a.client.rpc("rtc.publish", {"room": room, "sdp": munged})
        assert e.value.code == 107, e.value
        assert "codec" in e.value.message, e.value.message

        h263 = only_codec(sdp, "video", "H263")
        with pytest.raises(ReplyError) as e:
            await a.client.rpc("rtc.publish", {"room": room, "sdp": h263})
        assert e.value.code == 107 and "codec" in e.value.message, e.value

        for garbage in ["hello", "v=0\r\nm=video banana\r\n", "\x00" * 64]:
            with pytest.raises(ReplyError) as e:
                await a.client.rpc("rtc.publish", {"room": room, "sdp": garbage})
            assert e.value.code == 107 and "SDP" in e.value.message, (garbage, e.value)
            # A readable cause: one line, no parser internals (memory addresses).
            assert "\n" not in e.value.message and "0x" not in e.value.message, e.value.message
        with pytest.raises(ReplyError) as e:
            await a.client.rpc("rtc.answer", {"room": room, "sdp": "not an answer"})
        assert e.value.code == 107, e.value

        # The refusals left the participant usable: the unmunged offer is accepted.
        res = (await a.client.rpc("rtc.publish", {"room": room, "sdp": sdp})).data
        assert res["sdp"].startswith("v=0") and "VP8" in res["sdp"], res
    finally:
        await pc.close()
