import TestSupport
import Foundation
import ModuleELF
import Testing

/// Generator-based fuzzing: real modules mutated with a seeded generator (bit flips, byte
/// overwrites with boundary values, truncation, ELF header and section header field
/// corruption, xz stream damage). Every input must be read or rejected with a
/// ModuleReadError; a crash or hang fails the run. CI runs a short campaign; set
/// MODULEELF_FUZZ_ITERATIONS for a long one (the current input is kept in
/// MODULEELF_FUZZ_DIR, default the scratch directory, so a crash leaves its reproducer).
@Suite struct FuzzTests {
    /// xorshift64*: deterministic across runs and platforms.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 0x2545_F491_4F6C_DD1D
        }
    }

    static let interesting: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000_0000_0000, .max]

    /// Overwrites `width` bytes at `offset` (little-endian) when they fit.
    static func poke(_ image: inout [UInt8], _ offset: Int, _ value: UInt64, width: Int) {
        guard offset >= 0, offset + width <= image.count else { return }
        for byte in 0..<width { image[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))) }
    }

    static func mutate(_ original: [UInt8], using random: inout Generator) -> [UInt8] {
        var image = original
        let rounds = Int.random(in: 1...4, using: &random)
        for _ in 0..<rounds {
            switch Int.random(in: 0..<7, using: &random) {
            case 0:  // flip bits anywhere
                for _ in 0..<Int.random(in: 1...16, using: &random) {
                    let index = Int.random(in: 0..<image.count, using: &random)
                    image[index] ^= UInt8(1 << Int.random(in: 0..<8, using: &random))
                }
            case 1:  // truncate
                image = Array(image.prefix(Int.random(in: 0..<image.count, using: &random)))
                if image.isEmpty { return image }
            case 2:  // ELF header fields (e_shoff, e_shnum, e_shentsize, e_shstrndx, e_machine, class, data)
                let fields: [(Int, Int)] = [(0x28, 8), (0x3C, 2), (0x3A, 2), (0x3E, 2), (0x12, 2), (4, 1), (5, 1), (0x10, 2)]
                let (offset, width) = fields.randomElement(using: &random)!
                poke(&image, offset, interesting.randomElement(using: &random)!, width: width)
            case 3:  // a section header field: name, type, offset, size, link, entsize
                guard image.count >= 64 else { break }
                let tableOffset = image[0x28..<0x30].reversed().reduce(0) { $0 << 8 | Int($1) }
                let count = Int(image[0x3C]) | Int(image[0x3D]) << 8
                guard count > 0, tableOffset < image.count else { break }
                let header = tableOffset + Int.random(in: 0..<count, using: &random) * 64
                let fields: [(Int, Int)] = [(0, 4), (4, 4), (0x18, 8), (0x20, 8), (0x28, 4), (0x38, 8)]
                let (offset, width) = fields.randomElement(using: &random)!
                let value = Bool.random(using: &random)
                    ? interesting.randomElement(using: &random)!
                    : UInt64.random(in: 0...UInt64(image.count * 2), using: &random)
                poke(&image, header + offset, value, width: width)
            case 4:  // overwrite a run with boundary bytes
                let start = Int.random(in: 0..<image.count, using: &random)
                let length = min(Int.random(in: 1...64, using: &random), image.count - start)
                let fill = UInt8(truncatingIfNeeded: interesting.randomElement(using: &random)!)
                for index in start..<(start + length) { image[index] = fill }
            case 5:  // damage the signature trailer (descriptor and lengths)
                guard image.count > 40 else { break }
                let descriptor = image.count - 28 - 12
                poke(&image, descriptor + Int.random(in: 0..<12, using: &random), UInt64.random(in: 0...255, using: &random), width: 1)
            default:  // splice: copy a block from elsewhere in the file
                let from = Int.random(in: 0..<image.count, using: &random)
                let to = Int.random(in: 0..<image.count, using: &random)
                let length = min(Int.random(in: 1...512, using: &random), image.count - from, image.count - to)
                image.replaceSubrange(to..<(to + length), with: image[from..<(from + length)])
            }
        }
        return image
    }

    /// Runs `iterations` mutated inputs per seed module; returns (accepted, rejected).
    static func campaign(iterations: Int, seed: UInt64, directory: String) throws -> (Int, Int) {
        // A plain (6.1) and an xz (6.12) copy of each, whichever ABIs are installed.
        let seeds = InstalledKernels.standard.flatMap { release in
            ["drivers/usb/storage/usb-storage.ko", "fs/fat/vfat.ko"].compactMap { InstalledKernels.module(release, $0) }
        }
        var random = Generator(seed: seed)
        var accepted = 0, rejected = 0
        let path = directory + "/current-input.ko"
        for seedPath in seeds {
            let original = Array(try Data(contentsOf: URL(fileURLWithPath: seedPath)))
            for _ in 0..<iterations {
                let input = mutate(original, using: &random)
                try Data(input).write(to: URL(fileURLWithPath: path))
                do {
                    let module = try ModuleFile.read(path: path)
                    var sink: [UInt8] = []
                    ModinfoFormatter.render(module, filename: path, into: &sink)
                    _ = ModuleReport(module, path: path)
                    accepted += 1
                } catch {
                    #expect(error.description.hasPrefix(path + ": "))
                    #expect(!error.description.contains("\n"))
                    rejected += 1
                }
            }
        }
        return (accepted, rejected)
    }

    @Test func mutatedModulesNeverCrash() throws {
        let environment = ProcessInfo.processInfo.environment
        let iterations = environment["MODULEELF_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 300
        let seed = environment["MODULEELF_FUZZ_SEED"].flatMap(UInt64.init) ?? 20_250_101
        let scratch = try ScratchDirectory()
        let directory = environment["MODULEELF_FUZZ_DIR"] ?? scratch.path
        let (accepted, rejected) = try Self.campaign(iterations: iterations, seed: seed, directory: directory)
        #expect(accepted + rejected >= iterations * 2)
        // Both outcomes occur: the mutations reach past the first check.
        #expect(accepted > 0 && rejected > 0)
        print("fuzz: seed \(seed), \(accepted + rejected) inputs, \(accepted) read, \(rejected) rejected, 0 crashes")
    }
}
