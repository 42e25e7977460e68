import ArgumentParser
import Foundation
import ModuleELF
import NVBuildSupport
import Synchronization

struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Read .ko/.ko.xz/.ko.zst/.ko.gz files like modinfo, readelf and nm together.",
        discussion: """
            By default prints exactly what `modinfo FILE` prints for each file. Files are read \
            in parallel and reported in argument order; a file that cannot be read gets a \
            one-line error on stderr, the others are still reported. Exit status: 0 all read; \
            1 a file is not a sound module (corrupt ELF or compressed stream, trailing data); \
            2 a file could not be read at all (missing, no permission, not a regular file).
            """
    )

    @Argument(help: "Module files (.ko, .ko.xz, .ko.zst, .ko.gz).")
    var files: [String]

    @Option(name: [.customShort("F"), .long], help: "Print only this field's values, like `modinfo -F NAME`.")
    var field: String?

    @Flag(help: "Print exported symbols (GPL flag, namespace), undefined symbols and the __versions CRCs.")
    var symbols = false

    @Flag(help: "Print the section headers: name, type, size, flags.")
    var sections = false

    @Flag(help: "Print the signature: format, placement relative to compression, signer, key, hash.")
    var signature = false

    @Option(
        name: .customLong("verify-signature"),
        help: ArgumentHelp(
            "Check each module's signature cryptographically against this certificate (PEM, DER, or a kernel image's built-in certificates); repeat for more.",
            discussion: "Prints the signature view with a verdict: valid, signed by an unknown key, invalid or unsigned. The exit status is 1 unless every module is valid where the kernel checks it (a signature appended after compressing is not).",
            valueName: "cert"))
    var verifySignature: [String] = []

    @Flag(help: "Print one JSON document per file, one per line (schema: docs/inspect-json-schema.md).")
    var json = false

    @Flag(help: "Accept modules built for another machine than this host.")
    var anyMachine = false

    @Option(help: "Files read at the same time (default: the number of CPUs).")
    var jobs: Int?

    /// swift-argument-parser spends time proportional to the arguments still unparsed on each
    /// positional one, which is quadratic for the thousands of files of a whole kernel.
    /// Main therefore hands the parser only the options and the first file; the remaining
    /// files (in order) are appended after parsing.
    static func separateFiles(_ arguments: [String]) -> (forParser: [String], extraFiles: [String]) {
        guard arguments.first == commandName else { return (arguments, []) }
        let valued: Set<String> = ["--field", "-F", "--jobs", "--verify-signature"]
        var forParser = [arguments[0]]
        var extra: [String] = []
        var sawFile = false
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                // Everything after is a file; keep the marker and the first file for the parser.
                let rest = arguments[(index + 1)...]
                if !sawFile, let first = rest.first {
                    forParser += ["--", first]
                    extra += rest.dropFirst()
                } else {
                    extra += rest
                }
                break
            }
            if argument.hasPrefix("-"), argument.count > 1 {
                forParser.append(argument)
                if valued.contains(argument), index + 1 < arguments.count {
                    forParser.append(arguments[index + 1])
                    index += 1
                }
            } else if sawFile {
                extra.append(argument)
            } else {
                forParser.append(argument)
                sawFile = true
            }
            index += 1
        }
        return (forParser, extra)
    }

    private static var commandName: String { configuration.commandName ?? "inspect" }

    func validate() throws {
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if field != nil, symbols || sections || json || signature || !verifySignature.isEmpty {
            throw ValidationError("--field cannot be combined with --symbols, --sections, --signature, --verify-signature or --json")
        }
    }

    func run() async throws {
        var parts: ModuleParts = []
        if json {
            parts = .all
        } else {
            if field != nil || !(symbols || sections || signature) { parts.formUnion([.modinfo, .signature]) }
            if symbols { parts.insert(.symbols) }
            if sections { parts.insert(.sections) }
            if signature || !verifySignature.isEmpty { parts.insert(.signature) }
        }
        // Every certificate is read before any module: a bad one is one line and exit 2.
        var certificates: [SigningCertificate] = []
        for path in verifySignature { certificates += try SigningCertificate.load(path: path) }
        let trusted = certificates
        let verifying = !verifySignature.isEmpty
        let unverified = UnverifiedCount()
        let wanted = parts
        let directory = Self.currentDirectory()
        let machine: UInt16? = anyMachine ? nil : ModuleFile.hostMachine
        let render = Renderer(
            field: field, symbols: symbols, sections: sections, signature: signature || verifying, json: json)
        let failures = await ParallelInspector.run(
            paths: files, workers: jobs ?? ProcessInfo.processInfo.activeProcessorCount
        ) { path in
            let filename = ModinfoFormatter.absolutePath(path, currentDirectory: directory)
            do throws(ModuleReadError) {
                let module = try ModuleFile.read(path: path, parts: wanted, expectedMachine: machine)
                var verification: SignatureVerification? = nil
                if verifying {
                    let checked = try SignatureVerifier.verify(path: path, certificates: trusted)
                    if !checked.isValidForKernel { unverified.count.withLock { $0 += 1 } }
                    verification = checked
                }
                return .success(render.render(module, filename: filename, verification: verification))
            } catch {
                let report = json ? render.renderError(error, filename: filename) : []
                return .failure(error, report)
            }
        }
        if failures.total > 0 {
            // Each failed file already has its one error line; a batch also gets the count
            // (as a note, so every error line names its file). Unreadable input (missing, no
            // permission, not a regular file) is an environment error.
            if files.count > 1 { Terminal.note("\(failures.total) of \(files.count) files could not be inspected") }
            throw ExitCode(failures.unreadable > 0 ? 2 : 1)
        }
        let notValid = unverified.count.withLock { $0 }
        if notValid > 0 {
            throw UserError(.failed, "\(notValid) of \(files.count) module\(files.count == 1 ? "" : "s") did not verify against \(verifySignature.joined(separator: ", "))")
        }
    }

    /// The working directory as modinfo sees it: $PWD when it names the same directory, else getcwd.
    static func currentDirectory() -> String {
        var here = stat(), claimed = stat()
        if let pwd = ProcessInfo.processInfo.environment["PWD"], pwd.hasPrefix("/"),
            stat(".", &here) == 0, stat(pwd, &claimed) == 0,
            here.st_dev == claimed.st_dev, here.st_ino == claimed.st_ino
        {
            return pwd
        }
        return FileManager.default.currentDirectoryPath
    }
}

/// Modules whose signature did not verify, counted across the parallel readers.
final class UnverifiedCount: Sendable {
    let count = Mutex(0)
}

/// Turns one module into the bytes the chosen view prints.
struct Renderer: Sendable {
    var field: String?
    var symbols: Bool
    var sections: Bool
    var signature: Bool
    var json: Bool

    func render(_ module: ModuleFile, filename: String, verification: SignatureVerification? = nil) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(4096)
        if json {
            var report = ModuleReport(module, path: filename)
            report.signatureVerification = verification
            output = encode(report)
        } else if let field {
            ModinfoFormatter.renderField(field, module: module, filename: filename, into: &output)
        } else if symbols || sections || signature {
            output.append(contentsOf: "filename:       \(filename)\ncompression:    \(module.compression.rawValue)\n".utf8)
            if signature { renderSignature(module, into: &output) }
            if let verification { output.append(contentsOf: "verification:   \(verification.summary)\n".utf8) }
            if symbols { renderSymbols(module, into: &output) }
            if sections { renderSections(module, into: &output) }
        } else {
            ModinfoFormatter.render(module, filename: filename, into: &output)
        }
        return output
    }

    func renderError(_ error: ModuleReadError, filename: String) -> [UInt8] {
        encode(ModuleReport(path: filename, error: error))
    }

    private func encode(_ report: ModuleReport) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes = (try? encoder.encode(report)).map { Array($0) } ?? Array("{}".utf8)
        bytes.append(0x0A)
        return bytes
    }

    private func renderSignature(_ module: ModuleFile, into output: inout [UInt8]) {
        guard let signature = module.signature else {
            output.append(contentsOf: "signature:      none\n".utf8)
            return
        }
        let placement: String
        switch signature.placement {
        case .uncompressed: placement = "appended to the uncompressed module (the kernel checks it)"
        case .signedThenCompressed: placement = "signed, then compressed (the kernel checks it after decompressing)"
        case .compressedThenSigned:
            placement = "compressed, then signed (the kernel never sees it: sign before compressing)"
        }
        var text = "signature:      \(signature.idType)"
        if let algorithm = signature.keyAlgorithm { text += " \(algorithm)" }
        text += "\nplacement:      \(placement)\nsigner:         \(signature.signer)\n"
        output.append(contentsOf: text.utf8)
        output.append(contentsOf: "sig_key:        ".utf8)
        output.append(contentsOf: signature.keyID.map { byte in String(byte, radix: 16, uppercase: true).leftPadded(2) }.joined(separator: ":").utf8)
        output.append(contentsOf: "\nsig_hashalgo:   \(signature.hashAlgorithm)\nsig_length:     \(signature.signature.count)\n".utf8)
    }

    private func renderSymbols(_ module: ModuleFile, into output: inout [UInt8]) {
        var text = "exports:        \(module.exports.count)\n"
        for symbol in module.exports {
            text += "  \(symbol.isGPLOnly ? "EXPORT_SYMBOL_GPL" : "EXPORT_SYMBOL    ") \(symbol.symbol)"
            if let namespace = symbol.namespace { text += " [\(namespace)]" }
            text += "\n"
        }
        text += "undefined:      \(module.undefinedSymbols.count)\n"
        for name in module.undefinedSymbols { text += "  \(name)\n" }
        text += "versions:       \(module.versions.count)\n"
        for version in module.versions { text += "  \(crcText(version.crc)) \(version.name)\n" }
        output.append(contentsOf: text.utf8)
    }

    private func renderSections(_ module: ModuleFile, into output: inout [UInt8]) {
        var text = "sections:       \(module.sections.count)\n"
        for section in module.sections {
            text += "  [\(String(section.index).leftPadded(3, with: " "))] \(section.name.rightPadded(28)) "
                + "\(section.typeName.rightPadded(14)) \(String(section.size, radix: 16).leftPadded(8)) \(section.flagLetters)\n"
        }
        output.append(contentsOf: text.utf8)
    }
}

private extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
    func rightPadded(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}

/// Reads files in a bounded task group and prints results in argument order as soon as
/// each is ready.
enum ParallelInspector {
    enum Outcome: Sendable {
        case success([UInt8])
        case failure(ModuleReadError, [UInt8])
    }

    /// Returns the number of files that failed, and of those that could not be read at all.
    /// At most `workers` files are in work at once: a new one starts each time one finishes.
    static func run(
        paths: [String], workers: Int, work: @escaping @Sendable (String) -> Outcome
    ) async -> (total: Int, unreadable: Int) {
        let width = max(1, min(workers, paths.count))
        return await withTaskGroup(of: (Int, Outcome).self) { group in
            var started = 0
            func startNext() {
                guard started < paths.count else { return }
                let index = started
                started += 1
                group.addTask { (index, work(paths[index])) }
            }
            for _ in 0..<width { startNext() }
            var failures = 0, unreadable = 0
            var pending: [UInt8] = []
            pending.reserveCapacity(1 << 17)
            // Outcomes that finished ahead of an earlier file, held until it is printed.
            var waiting: [Int: Outcome] = [:]
            var nextToPrint = 0
            while let (index, outcome) = await group.next() {
                startNext()
                waiting[index] = outcome
                while let ready = waiting.removeValue(forKey: nextToPrint) {
                    nextToPrint += 1
                    switch ready {
                    case .success(let bytes):
                        pending.append(contentsOf: bytes)
                    case .failure(let error, let bytes):
                        // Keep stdout and stderr in order for a reader watching both.
                        Terminal.writeRaw(pending)
                        pending.removeAll(keepingCapacity: true)
                        failures += 1
                        if error.isUnreadable { unreadable += 1 }
                        Terminal.error(error.description)
                        pending.append(contentsOf: bytes)
                    }
                    if pending.count >= 1 << 16 {
                        Terminal.writeRaw(pending)
                        pending.removeAll(keepingCapacity: true)
                    }
                }
            }
            Terminal.writeRaw(pending)
            return (failures, unreadable)
        }
    }
}
