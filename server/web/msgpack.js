// Minimal MessagePack decoder for the SLAM viewer (decode only; no ext types).
// `bin` values come back as Uint8Array views into the message buffer; use
// typedArray() to view packed little-endian arrays as Float32Array etc.

const textDecoder = new TextDecoder("utf-8");

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  take(n) {
    if (this.pos + n > this.bytes.length) throw new Error("msgpack: truncated");
    const start = this.pos;
    this.pos += n;
    return start;
  }

  u8() { return this.view.getUint8(this.take(1)); }
  u16() { return this.view.getUint16(this.take(2)); }
  u32() { return this.view.getUint32(this.take(4)); }

  str(n) { const s = this.take(n); return textDecoder.decode(this.bytes.subarray(s, s + n)); }
  bin(n) { const s = this.take(n); return this.bytes.subarray(s, s + n); }

  array(n) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value();
    return out;
  }

  map(n) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.value();
      out[key] = this.value();
    }
    return out;
  }

  value() {
    const b = this.u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return this.map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return this.array(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return this.str(b & 0x1f);
    const v = this.view;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.u8());
      case 0xc5: return this.bin(this.u16());
      case 0xc6: return this.bin(this.u32());
      case 0xca: return v.getFloat32(this.take(4));
      case 0xcb: return v.getFloat64(this.take(8));
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return Number(v.getBigUint64(this.take(8)));
      case 0xd0: return v.getInt8(this.take(1));
      case 0xd1: return v.getInt16(this.take(2));
      case 0xd2: return v.getInt32(this.take(4));
      case 0xd3: return Number(v.getBigInt64(this.take(8)));
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16());
      case 0xdd: return this.array(this.u32());
      case 0xde: return this.map(this.u16());
      case 0xdf: return this.map(this.u32());
      default: throw new Error(`msgpack: unsupported type byte 0x${b.toString(16)}`);
    }
  }
}

/** Decode one msgpack value from a Uint8Array. */
export function decode(bytes) {
  const reader = new Reader(bytes);
  const out = reader.value();
  if (reader.pos !== bytes.length) throw new Error("msgpack: trailing bytes");
  return out;
}

/**
 * View a packed little-endian array (a msgpack `bin`) as `Type` (e.g. Float32Array).
 * Copies when the bytes are not aligned for the type. Returns an empty array for null.
 */
export function typedArray(bin, Type) {
  if (!bin) return new Type(0);
  const n = Math.floor(bin.byteLength / Type.BYTES_PER_ELEMENT);
  if (bin.byteOffset % Type.BYTES_PER_ELEMENT === 0) return new Type(bin.buffer, bin.byteOffset, n);
  return new Type(bin.slice(0, n * Type.BYTES_PER_ELEMENT).buffer);
}

/** int64 ids (packed little-endian) as plain numbers (exact below 2**53). */
export function int64Ids(bin) {
  if (!bin) return [];
  const view = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
  const out = new Array(Math.floor(bin.byteLength / 8));
  for (let i = 0; i < out.length; i++) out[i] = Number(view.getBigInt64(8 * i, true));
  return out;
}
