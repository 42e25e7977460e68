import Foundation

/// xorshift64*: a seeded generator, the same sequence on every run and machine, so a
/// fuzz failure is reproduced by its seed.
public struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    public mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

/// Byte-level damage to real inputs (modules, indexes, text files): what a broken disk, a
/// truncated download or a hostile file does to them.
public enum Mutation {
    public static let boundaryValues: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000_0000_0000, .max]

    /// Overwrites `width` bytes at `offset` with `value` in the given byte order, when they fit.
    public static func poke(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt64, width: Int, bigEndian: Bool = false) {
        guard offset >= 0, offset + width <= bytes.count else { return }
        for byte in 0..<width {
            let shift = bigEndian ? 8 * UInt64(width - 1 - byte) : 8 * UInt64(byte)
            bytes[offset + byte] = UInt8(truncatingIfNeeded: value >> shift)
        }
    }

    /// Format-blind damage: bit flips, truncation, boundary runs, splices, random tails.
    public static func damage(_ original: [UInt8], using random: inout SeededGenerator) -> [UInt8] {
        var bytes = original
        guard !bytes.isEmpty else { return (0..<Int.random(in: 1...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) } }
        for _ in 0..<Int.random(in: 1...3, using: &random) {
            guard !bytes.isEmpty else { break }
            switch Int.random(in: 0..<6, using: &random) {
            case 0:
                for _ in 0..<Int.random(in: 1...16, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] ^= UInt8(1 << Int.random(in: 0..<8, using: &random))
                }
            case 1:
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &random)))
            case 2:
                let start = Int.random(in: 0..<bytes.count, using: &random)
                let length = min(Int.random(in: 1...64, using: &random), bytes.count - start)
                let fill = UInt8(truncatingIfNeeded: boundaryValues.randomElement(using: &random)!)
                for index in start..<(start + length) { bytes[index] = fill }
            case 3:
                let width = [1, 2, 4, 8].randomElement(using: &random)!
                poke(&bytes, Int.random(in: 0..<bytes.count, using: &random), boundaryValues.randomElement(using: &random)!,
                     width: width, bigEndian: Bool.random(using: &random))
            case 4:
                let from = Int.random(in: 0..<bytes.count, using: &random)
                let to = Int.random(in: 0..<bytes.count, using: &random)
                let length = min(Int.random(in: 1...512, using: &random), bytes.count - from, bytes.count - to)
                bytes.replaceSubrange(to..<(to + length), with: bytes[from..<(from + length)])
            default:
                bytes += (0..<Int.random(in: 1...256, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
        }
        return bytes
    }

    /// ELF-aware damage to a module: the fields a loader trusts (header, section table,
    /// signature trailer) as well as format-blind damage.
    public static func damageModule(_ original: [UInt8], using random: inout SeededGenerator) -> [UInt8] {
        var image = original
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            guard image.count >= 64 else { return image }
            switch Int.random(in: 0..<4, using: &random) {
            case 0:  // ELF header: e_shoff, e_shnum, e_shentsize, e_shstrndx, e_machine, class, data, type
                let fields: [(Int, Int)] = [(0x28, 8), (0x3C, 2), (0x3A, 2), (0x3E, 2), (0x12, 2), (4, 1), (5, 1), (0x10, 2)]
                let (offset, width) = fields.randomElement(using: &random)!
                poke(&image, offset, boundaryValues.randomElement(using: &random)!, width: width)
            case 1:  // one section header: name, type, offset, size, link, entsize
                let tableOffset = image[0x28..<0x30].reversed().reduce(0) { $0 << 8 | Int($1) }
                let count = Int(image[0x3C]) | Int(image[0x3D]) << 8
                guard count > 0, tableOffset < image.count else { break }
                let header = tableOffset + Int.random(in: 0..<count, using: &random) * 64
                let fields: [(Int, Int)] = [(0, 4), (4, 4), (0x18, 8), (0x20, 8), (0x28, 4), (0x38, 8)]
                let (offset, width) = fields.randomElement(using: &random)!
                let value = Bool.random(using: &random)
                    ? boundaryValues.randomElement(using: &random)!
                    : UInt64.random(in: 0...UInt64(image.count * 2), using: &random)
                poke(&image, header + offset, value, width: width)
            case 2:  // the signature descriptor before the trailing magic
                guard image.count > 40 else { break }
                poke(&image, image.count - 40 + Int.random(in: 0..<12, using: &random), UInt64.random(in: 0...255, using: &random), width: 1)
            default:
                image = damage(image, using: &random)
            }
        }
        return image
    }
}
