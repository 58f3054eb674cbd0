#!/usr/bin/env python3
"""Golden MLX90640 temperatures for the Rust `mlx90640` module, computed by an independent
implementation: the pure-Python Melexis port in PyPI `adafruit-circuitpython-mlx90640`
(module `adafruit_mlx90640`, functions _ExtractParameters/_GetVdd/_GetTa/_CalculateTo).

Input:  tests/fixtures/thermal/mlx90640_tcp_session.jsonl of this checkout (or argv[1]).
Output: tests/fixtures/thermal/mlx90640_golden_centi.bin of this checkout (or argv[2]).

Rules (identical to the Rust side):
  * byte stream = concatenation of `data` of dir == "from_device" records, in file order;
  * packets end with '!' (normally followed by "\r\n"; the final EEPROM reply has no "\r\n");
  * `#frame<id>:<hex>` is used only if the payload is exactly 3336 hex chars (834 words), else
    rejected (4 corrupted frames in this capture) -> 188 frames;
  * EEPROM = the first `#EEPROM<id>:<3328 hex>` reply (all 15 are identical; asserted);
  * frame word 832 (control register) is replaced by 0x1901 (the capture holds 0x0001 there);
  * every pixel is computed: _CalculateTo is run twice on the same frame, with word 833 (subpage)
    set to 0 and then to 1, writing into the same result list. Each pass only writes the pixels
    whose chess pattern ((row + col) % 2 in mode 0x1901) equals the subpage, using that subpage's
    CP word (776 for subpage 0, 808 for subpage 1), so the two passes merge by chess pattern;
  * emissivity 0.95, Tr = Ta - 8 (Ta from _GetTa of the same frame).

Binary layout (all little-endian int16, no header), for each of the 188 frames in capture order:
      [0]      round(VDD * 1000)      (volts -> millivolts)
      [1]      round(Ta * 100)        (die temperature, centi-degC)
      [2..770] round(To * 100)        (768 object temperatures, centi-degC, row-major 24x32,
                                       index = row * 32 + col)
  i.e. 770 int16 = 1540 bytes per frame, 289520 bytes in total. round() is Python's round
  (half to even); the Rust test tolerance (0.05 degC) is far above that 0.005 quantisation.

Second file, tests/fixtures/thermal/mlx90640_golden_variants_centi.bin, same per-frame layout:
  this device's EEPROM has Tgc = 0 (word 0x243C low byte = 0), which makes the CP words, and so
  the subpage choice, irrelevant to To, and its calibration mode matches chess mode, which skips
  the interleaved/chess (CILC) corrections. To validate those paths too, two synthetic variants
  are computed on the FIRST 8 complete frames, with EEPROM word 60 low byte set to 0x20
  (Tgc = 1.0; the alpha extraction changes with it):
      variant A: control 0x1901 (chess, = calibration mode): 8 frames
      variant B: control 0x0901 (interleaved: pattern = row % 2, mode != calibration mode, so
                 ilChessC corrections apply): 8 frames
  written A then B: 16 * 770 int16 = 24640 bytes.
"""
import json
import math
import os
import struct
import sys

import adafruit_mlx90640 as amlx

FRAME_HEX = 834 * 4
EEPROM_HEX = 832 * 4


def packets(path):
    stream = "".join(
        rec["data"]
        for rec in map(json.loads, open(path, encoding="utf-8"))
        if rec["dir"] == "from_device"
    )
    for chunk in stream.split("!"):
        chunk = chunk.lstrip("\r\n")
        if chunk.startswith("#") and ":" in chunk:
            head, payload = chunk[1:].split(":", 1)
            yield head, payload


def words(hexstr):
    return [int(hexstr[i:i + 4], 16) for i in range(0, len(hexstr), 4)]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    thermal = os.path.join(root, "tests", "fixtures", "thermal")
    session = sys.argv[1] if len(sys.argv) > 1 else os.path.join(thermal, "mlx90640_tcp_session.jsonl")
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(thermal, "mlx90640_golden_centi.bin")

    frames, eeproms, rejected = [], [], 0
    for head, payload in packets(session):
        if head.startswith("frame"):
            if len(payload) == FRAME_HEX:
                frames.append(words(payload))
            else:
                rejected += 1
        elif head.startswith("EEPROM") and len(payload) == EEPROM_HEX:
            eeproms.append(payload)
    assert len(set(eeproms)) == 1, "EEPROM replies differ"

    ee = words(eeproms[0])
    out, first = golden(ee, frames, 0x1901)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "wb") as fh:
        fh.write(out)
    print("frames %d (rejected %d), eeprom replies %d, wrote %d bytes to %s"
          % (len(frames), rejected, len(eeproms), len(out), out_path))
    print("first frame: VDD %.4f V  Ta %.3f C  To min %.3f max %.3f mean %.3f" % first)

    ee_tgc = list(ee)
    ee_tgc[60] = (ee_tgc[60] & 0xFF00) | 0x20
    variants = bytearray()
    for control in (0x1901, 0x0901):
        data, vfirst = golden(ee_tgc, frames[:8], control)
        variants += data
        print("variant tgc=1 control %#06x first frame: VDD %.4f Ta %.3f To min %.3f max %.3f mean %.3f"
              % ((control,) + vfirst))
    vpath = os.path.join(os.path.dirname(out_path), "mlx90640_golden_variants_centi.bin")
    with open(vpath, "wb") as fh:
        fh.write(variants)
    print("wrote %d bytes to %s" % (len(variants), vpath))


def golden(ee, frames, control):
    # Drive the driver without hardware: skip __init__ (which reads EEPROM over I2C) and load
    # the module-global eeData buffer the Melexis port reads from, then extract parameters.
    # (The port keeps broken/outlier lists as class attributes, so reset them per EEPROM.)
    amlx.eeData[:] = ee
    amlx.MLX90640.brokenPixels = []
    amlx.MLX90640.outlierPixels = []
    dev = amlx.MLX90640.__new__(amlx.MLX90640)
    dev._ExtractParameters()
    assert not dev.brokenPixels and not dev.outlierPixels

    out = bytearray()
    first = None
    for fw in frames:
        f = list(fw)
        f[832] = control
        result = [float("nan")] * 768
        for sub in (0, 1):
            f[833] = sub
            tr = dev._GetTa(f) - 8.0
            dev._CalculateTo(f, 0.95, tr, result)
        assert all(math.isfinite(t) for t in result)
        vdd, ta = dev._GetVdd(f), dev._GetTa(f)
        out += struct.pack("<hh", round(vdd * 1000), round(ta * 100))
        out += struct.pack("<768h", *(round(t * 100) for t in result))
        if first is None:
            first = (vdd, ta, min(result), max(result), sum(result) / 768)
    return out, first


if __name__ == "__main__":
    main()
