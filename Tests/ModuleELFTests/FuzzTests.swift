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
    /// Runs `iterations` mutated inputs per seed module; returns (accepted, rejected).
    static func campaign(iterations: Int, seed: UInt64, directory: String) throws -> (Int, Int) {
        // A plain (6.1) and an xz (6.12) copy of each, whichever ABIs are installed.
        let seeds = InstalledKernels.standard.flatMap { release in
            ["drivers/usb/storage/usb-storage.ko", "fs/fat/vfat.ko"].compactMap { InstalledKernels.module(release, $0) }
        }
        var random = SeededGenerator(seed: seed)
        var accepted = 0, rejected = 0
        let path = directory + "/current-input.ko"
        for seedPath in seeds {
            let original = Array(try Data(contentsOf: URL(fileURLWithPath: seedPath)))
            for _ in 0..<iterations {
                let input = Mutation.damageModule(original, using: &random)
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
