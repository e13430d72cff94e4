"""Rendering one synthetic piano performance: frames (keyboard + two hands) and audio.

Skill level L (0..9, s = L / 9) changes what is seen AND heard, so either modality can tell it:
  chord size         1 + L keys pressed at once, by both hands (more keys lit, more partials)
  tempo              1.5 + 0.75 L chords per second (key changes, note onsets)
  timing jitter      onsets off the beat by N(0, 0.3 (1 - s)) beats
  wrong notes        probability 0.5 (1 - s) per chord that one key is the black key beside it
                     (a dissonant semitone in the audio)
  unsteady hands     both hands shake by N(0, 0.05 (1 - s)) of the frame per frame
  uneven dynamics    loudness varies by 0.35 (1 - s)
Per video, nuisances that do not depend on skill: chord sequence, tempo +-10 %, camera position
(+-2 % of the frame). Everything is drawn from `rng`, so a seed fixes the video.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pisa_jax.media.spectrogram import SAMPLE_RATE

WHITE_KEYS = 10                                   # C3 .. E4: few keys, so each is large
HAND_KEYS = 5                                     # left hand keys 0-4, right hand 5-9
SEMITONES = np.array([0, 2, 4, 5, 7, 9, 11])      # C D E F G A B
HAS_BLACK_RIGHT = {0, 1, 3, 4, 5}                 # C#, D#, F#, G#, A# follow C, D, F, G, A


@dataclasses.dataclass(frozen=True)
class Chord:
    onset_s: float
    keys: tuple[tuple[int, bool], ...]   # (white key index, is the black key right of it)
    velocity: float


def skill_parameters(level: int) -> dict:
    s = level / 9.0
    return {"chord_size": 1 + level, "chords_per_s": 1.5 + 0.75 * level,
            "jitter_beats": 0.3 * (1 - s), "wrong_prob": 0.5 * (1 - s),
            "shake": 0.05 * (1 - s), "dynamics": 0.35 * (1 - s)}


def _wrong(key: int) -> tuple[int, bool]:
    """The black key beside white key `key` (right if there is one, else left)."""
    return (key, True) if key % 7 in HAS_BLACK_RIGHT else (key - 1, True)


def performance(level: int, duration_s: float, rng: np.random.Generator) -> list[Chord]:
    p = skill_parameters(level)
    beat = 1.0 / (p["chords_per_s"] * rng.uniform(0.9, 1.1))
    chords = []
    for n in range(int(duration_s / beat) + 1):
        onset = n * beat + rng.normal(0.0, p["jitter_beats"] * beat)
        white = np.sort(rng.choice(WHITE_KEYS, p["chord_size"], replace=False))
        keys = [(int(k), False) for k in white]
        if rng.random() < p["wrong_prob"]:
            i = int(rng.integers(0, len(keys)))
            keys[i] = _wrong(keys[i][0])
        velocity = float(np.clip(0.7 + p["dynamics"] * rng.normal(), 0.2, 1.0))
        chords.append(Chord(max(onset, 0.0), tuple(keys), velocity))
    chords.sort(key=lambda c: c.onset_s)
    return [c for c in chords if c.onset_s < duration_s]


def _pitch_hz(key: tuple[int, bool]) -> float:
    white, black = key
    midi = 48 + 12 * (white // 7) + SEMITONES[white % 7] + int(black)
    return 440.0 * 2 ** ((midi - 69) / 12)


def render_audio(chords: list[Chord], duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Piano-like tones (4 decaying partials) -> float32 [duration_s * 44100], peak 0.8."""
    n = int(round(duration_s * SAMPLE_RATE))
    out = np.zeros(n + SAMPLE_RATE, np.float64)
    t = np.arange(int(0.8 * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = np.minimum(t / 0.003, 1.0)
    tones: dict[tuple[int, bool], np.ndarray] = {}
    for chord in chords:
        start = int(round(chord.onset_s * SAMPLE_RATE))
        for key in chord.keys:
            if key not in tones:
                f0 = _pitch_hz(key)
                tones[key] = envelope * sum(np.sin(2 * np.pi * h * f0 * t) * np.exp(-t * h / 0.4)
                                            / h for h in range(1, 5))
            out[start:start + t.size] += chord.velocity * tones[key]
    out = out[:n] + 1e-3 * rng.standard_normal(n)  # a faint noise floor, like a room
    return (0.8 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


class Scene:
    """Draws frames of size x size: keyboard in the lower 55 %, hands above it."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        # Same colours in every video: a colour unique to a video lets a net memorise videos
        # instead of learning skill, and colour shifts would hide the pressed-key colour.
        self.background = np.array([60.0, 50.0, 40.0])
        self.skin = np.array([205.0, 145.0, 110.0])
        self.offset = rng.uniform(-0.02, 0.02, 2) * size          # camera position
        self.key_w = size / WHITE_KEYS
        self.top = int(0.45 * size)
        frame = np.empty((size, size, 3), np.float32)
        frame[:] = self.background * np.linspace(0.7, 1.2, size)[:, None, None]
        frame[self.top:] = 225.0
        for k in range(WHITE_KEYS + 1):
            frame[self.top:, min(int(k * self.key_w), size - 1)] = 90.0
        for k in range(WHITE_KEYS - 1):
            if k % 7 in HAS_BLACK_RIGHT:
                self._key_box(frame, (k, True), 25.0)
        self.keyboard = frame

    def _key_box(self, frame, key, colour, pressed=False):
        white, black = key
        if black:
            x0, x1 = (white + 0.7) * self.key_w, (white + 1.3) * self.key_w
            y1 = self.top + 0.6 * (self.size - self.top)
        else:
            x0, x1 = (white + 0.15) * self.key_w, (white + 0.85) * self.key_w
            y1 = self.size
        y0 = self.top + (0.05 * (self.size - self.top) if pressed and not black else 0)
        frame[int(y0):int(y1), int(x0):max(int(x1), int(x0) + 1)] = colour

    def _block(self, frame, cx, cy, half_w, half_h, colour):
        x0, x1 = int(max(cx - half_w, 0)), int(min(cx + half_w, self.size))
        y0, y1 = int(max(cy - half_h, 0)), int(min(cy + half_h, self.size))
        if x1 > x0 and y1 > y0:
            frame[y0:y1, x0:x1] = colour

    def draw(self, pressed: tuple, shake: np.ndarray) -> np.ndarray:
        """pressed: keys down now; shake: [2 hands, 2] pixel offsets -> uint8 [size, size, 3]."""
        frame = self.keyboard.copy()
        for key in pressed:
            self._key_box(frame, key, (40.0, 90.0, 255.0) if key[1] else (60.0, 130.0, 255.0),
                          pressed=True)
        for key in pressed:  # black keys stay on top of pressed white ones
            if not key[1] and key[0] % 7 in HAS_BLACK_RIGHT and (key[0], True) not in pressed:
                self._key_box(frame, (key[0], True), 25.0)
            if not key[1] and (key[0] - 1) % 7 in HAS_BLACK_RIGHT and key[0] > 0 \
                    and (key[0] - 1, True) not in pressed:
                self._key_box(frame, (key[0] - 1, True), 25.0)
        hands = [[k for k in pressed if k[0] < HAND_KEYS] or [(2, False)],
                 [k for k in pressed if k[0] >= HAND_KEYS] or [(7, False)]]
        for hand, (keys, (dx, dy)) in enumerate(zip(hands, shake)):
            centre = np.mean([(w + 0.5 + 0.5 * b) * self.key_w for w, b in keys]) + dx
            hand_y = self.top - 0.12 * self.size + dy
            self._block(frame, centre, hand_y, 0.11 * self.size, 0.07 * self.size, self.skin)
            for w, b in (k for k in keys if k in pressed):   # fingers on the pressed keys
                x = (w + 0.5 + 0.5 * b) * self.key_w + dx
                self._block(frame, x, hand_y + 0.1 * self.size, 0.3 * self.key_w,
                            0.08 * self.size, self.skin * 0.9)
        return np.clip(self._shift(frame), 0, 255).astype(np.uint8)

    def _shift(self, frame):
        """Moves the picture by the camera offset, repeating the edge pixels."""
        dy, dx = (int(v) for v in np.round(self.offset))
        rows = np.clip(np.arange(self.size) - dy, 0, self.size - 1)
        cols = np.clip(np.arange(self.size) - dx, 0, self.size - 1)
        return frame[rows][:, cols]


def render_video(level: int, num_frames: int, fps: float, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 frames [num_frames, size, size, 3], float32 audio at 44.1 kHz)."""
    duration = num_frames / fps
    chords = performance(level, duration, rng)
    scene = Scene(size, rng)
    onsets = np.array([c.onset_s for c in chords])
    hold = 0.7 / skill_parameters(level)["chords_per_s"]   # keys stay down 70 % of a beat
    shake = rng.normal(0.0, skill_parameters(level)["shake"] * size, (num_frames, 2, 2))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for i in range(num_frames):
        t = i / fps
        current = int(np.searchsorted(onsets, t, side="right")) - 1
        down = current >= 0 and t < onsets[current] + hold
        frames[i] = scene.draw(chords[current].keys if down else (), shake[i])
    return frames, render_audio(chords, duration, rng)
