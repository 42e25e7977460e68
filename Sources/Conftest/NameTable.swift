/// Identifier lookup by bytes without making a String per token (preprocessor
/// output, Module.symvers): names are hashed as bytes, then compared.
struct NameTable {
    private var slots: [UInt64: [(bytes: [UInt8], value: Int)]] = [:]

    static func hash(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in s..<e {
            h ^= UInt64(buf[i])
            h = h &* 0x100_0000_01b3
        }
        return h
    }

    mutating func insert(_ name: String, value: Int) {
        let bytes = Array(name.utf8)
        let h = bytes.withUnsafeBufferPointer { Self.hash($0, 0, $0.count) }
        slots[h, default: []].append((bytes, value))
    }

    func lookup(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBufferPointer { lookup($0, 0, $0.count) }
    }

    func lookup(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> Int? {
        guard let bucket = slots[Self.hash(buf, s, e)] else { return nil }
        for entry in bucket where entry.bytes.count == e - s {
            var same = true
            for k in 0..<(e - s) where entry.bytes[k] != buf[s + k] {
                same = false
                break
            }
            if same { return entry.value }
        }
        return nil
    }
}
