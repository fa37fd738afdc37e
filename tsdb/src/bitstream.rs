//! Bit-level writer and reader for the chunk codec (most significant bit first).

#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0 means a new byte is needed).
    free: u8,
}

impl BitWriter {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit {
            *self.bytes.last_mut().expect("a byte was pushed") |= 1 << self.free;
        }
    }

    /// Writes the low `count` bits of `value`, most significant first.
    pub(crate) fn write_bits(&mut self, value: u64, count: u8) {
        let mut remaining = count;
        while remaining > 0 {
            if self.free == 0 {
                self.bytes.push(0);
                self.free = 8;
            }
            let take = remaining.min(self.free);
            let shift = remaining - take;
            let chunk = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            self.free -= take;
            *self.bytes.last_mut().expect("a byte was pushed") |= chunk << self.free;
            remaining -= take;
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    bit_pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, bit_pos: 0 }
    }

    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.bit_pos / 8)?;
        let bit = byte & (0x80 >> (self.bit_pos % 8)) != 0;
        self.bit_pos += 1;
        Some(bit)
    }

    pub(crate) fn read_bits(&mut self, count: u8) -> Option<u64> {
        let mut value = 0u64;
        let mut remaining = count;
        while remaining > 0 {
            let byte = *self.bytes.get(self.bit_pos / 8)?;
            let offset = (self.bit_pos % 8) as u8;
            let available = 8 - offset;
            let take = remaining.min(available);
            let chunk = (byte >> (available - take)) & (((1u16 << take) - 1) as u8);
            value = (value << take) | u64::from(chunk);
            self.bit_pos += take as usize;
            remaining -= take;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_widths_round_trip() {
        let fields: [(u64, u8); 6] = [(1, 1), (0b101, 3), (u64::MAX, 64), (0, 7), (0x1234, 14), (1, 1)];
        let mut writer = BitWriter::default();
        for (value, bits) in fields {
            writer.write_bits(value, bits);
        }
        let mut reader = BitReader::new(writer.bytes());
        for (value, bits) in fields {
            assert_eq!(reader.read_bits(bits), Some(value));
        }
    }
}
