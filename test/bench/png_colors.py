"""Exits 0 when a PNG (8-bit RGB or RGBA, non-interlaced) has at least 200 pixels of each given
hex colour: proof that a screenshot shows the plotted curves. Standard library only."""
import struct
import sys
import zlib


def pixels(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, "unsupported PNG format"
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    channels = 3 if color == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            up_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                line[i] = (line[i] + predictor) & 0xFF
        for x in range(width):
            yield bytes(line[x * channels:x * channels + 3])
        previous = line


def main():
    wanted = {bytes.fromhex(color): 0 for color in sys.argv[2:]}
    for pixel in pixels(sys.argv[1]):
        if pixel in wanted:
            wanted[pixel] += 1
    for color, count in wanted.items():
        print("#%s: %d pixels" % (color.hex(), count))
    sys.exit(0 if all(count >= 200 for count in wanted.values()) else 1)


main()
