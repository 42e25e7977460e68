import Crypto
import Foundation
import NVBuildSupport

/// A content-addressed store of compile outcomes. The key covers the compiler
/// (binary and version), the full flag list, the source and auxiliary files;
/// each entry also records the content hash of every file the compile read
/// (from the compiler's own dependency output), and is used only while all of
/// them are unchanged. Entries are written atomically and carry a checksum, so
/// a truncated or corrupted entry is detected and recomputed, never trusted.
public final class ResultCache: @unchecked Sendable {
    public let directory: String
    private let lock = NSLock()
    private var fileHashes: [String: String] = [:]
    /// Real path prefix → placeholder. Keys and recorded dependency paths are stored
    /// with the kernel and tree locations abstracted, so another ABI of the same kernel
    /// series, or another copy or release of a driver tree, reuses every result whose
    /// inputs have the same content (the dependency hashes decide, never the names).
    private var substitutions: [(path: String, placeholder: String)] = []

    public struct Context: Sendable {
        public var compiler: [String]
        public var compilerIdentity: String
        public var flags: [String]
    }

    struct Entry: Codable {
        var compiled: Bool
        var diagnostics: String
        var dependencies: [String: String]
        /// Paths whose absence the result depends on (a header that was not found).
        var absent: [String]?
    }

    struct Envelope: Codable {
        var entry: Entry
        var checksum: String
    }

    public init(directory: String) throws {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw UserError(.environment, "\(directory): cannot create the cache directory (\(error.localizedDescription)); pick another with --cache-dir or pass --no-cache")
        }
    }

    /// Sets the locations abstracted in keys; call before the first lookup.
    public func abstract(_ paths: [(path: String, placeholder: String)]) {
        lock.lock()
        substitutions = paths.filter { !$0.path.isEmpty }.sorted { $0.path.count > $1.path.count }
        lock.unlock()
    }

    func normalize(_ text: String) -> String {
        var t = text
        for s in substitutions { t = t.replacingOccurrences(of: s.path, with: s.placeholder) }
        return t
    }

    func expand(_ text: String) -> String {
        for s in substitutions where text.hasPrefix(s.placeholder) {
            return s.path + text.dropFirst(s.placeholder.count)
        }
        return text
    }

    /// The driver's version define is read by no kernel header and no catalog test (the
    /// catalog hygiene test checks the latter); leaving it out of keys lets one driver
    /// release reuse another's results.
    static func keyFlags(_ flags: [String]) -> [String] {
        flags.filter { !$0.hasPrefix("-DNV_VERSION_STRING=") }
    }

    /// `--cache-dir`, else NVBUILD_CACHE_DIR, else $XDG_CACHE_HOME/nvbuild, else ~/.cache/nvbuild.
    public static func defaultDirectory(environment: [String: String]) -> String {
        if let d = environment["NVBUILD_CACHE_DIR"], !d.isEmpty { return d }
        if let x = environment["XDG_CACHE_HOME"], !x.isEmpty { return x + "/nvbuild" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.cache/nvbuild"
    }

    /// Identifies a compiler by its resolved binary's content and its version text.
    public static func compilerIdentity(_ compiler: [String]) async throws -> String {
        let version = try await ProcessRunner().run(compiler + ["--version"]).standardOutput
        var identity = compiler.joined(separator: " ") + "\n" + version
        if let path = ProcessRunner.lookup(compiler[0]) {
            let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            if let data = FileManager.default.contents(atPath: resolved) {
                identity += SHA256.hash(data: data).hexString
            }
        }
        return identity
    }

    func key(context: Context, source: String, files: [TestDefinition.AuxiliaryFile]) -> String {
        var hasher = SHA256()
        hasher.update(data: Data("nvbuild-cache-v2\n".utf8))
        hasher.update(data: Data(context.compilerIdentity.utf8))
        for flag in Self.keyFlags(context.flags) { hasher.update(data: Data((normalize(flag) + "\u{0}").utf8)) }
        hasher.update(data: Data(source.utf8))
        for file in files { hasher.update(data: Data((file.name + "\u{0}" + file.content + "\u{0}").utf8)) }
        return hasher.finalize().hexString
    }

    private func path(for key: String) -> String {
        "\(directory)/\(key.prefix(2))/\(key)"
    }

    func hashOfFile(_ path: String) -> String? {
        lock.lock()
        if let h = fileHashes[path] {
            lock.unlock()
            return h
        }
        lock.unlock()
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let h = SHA256.hash(data: data).hexString
        lock.lock()
        fileHashes[path] = h
        lock.unlock()
        return h
    }

    public func lookup(context: Context, source: String, files: [TestDefinition.AuxiliaryFile]) -> (compiled: Bool, diagnostics: String)? {
        let file = path(for: key(context: context, source: source, files: files))
        guard let data = FileManager.default.contents(atPath: file),
            let envelope = try? JSONDecoder().decode(Envelope.self, from: data),
            let body = try? Self.encode(envelope.entry),
            SHA256.hash(data: body).hexString == envelope.checksum
        else { return nil }
        return validated(envelope.entry).map { ($0.compiled, $0.diagnostics) }
    }

    private func validated(_ entry: Entry) -> Entry? {
        for (dep, hash) in entry.dependencies where hashOfFile(expand(dep)) != hash {
            return nil
        }
        for path in entry.absent ?? [] where FileManager.default.fileExists(atPath: expand(path)) {
            return nil
        }
        return entry
    }

    /// A cached result of any other step (header presence, sanity compile), under a
    /// key the caller derives from everything the step reads besides `dependencies`.
    public func lookup(step key: String) -> (ok: Bool, output: String)? {
        guard let data = FileManager.default.contents(atPath: path(for: stepKey(key))),
            let envelope = try? JSONDecoder().decode(Envelope.self, from: data),
            let body = try? Self.encode(envelope.entry),
            SHA256.hash(data: body).hexString == envelope.checksum,
            let entry = validated(envelope.entry)
        else { return nil }
        return (entry.compiled, entry.diagnostics)
    }

    public func store(step key: String, ok: Bool, output: String, dependencies: [String], absent: [String] = []) {
        var deps: [String: String] = [:]
        for dep in dependencies {
            guard let h = hashOfFile(dep) else { return }
            deps[normalize(dep)] = h
        }
        let entry = Entry(compiled: ok, diagnostics: output, dependencies: deps, absent: absent.map(normalize))
        guard let body = try? Self.encode(entry),
            let data = try? JSONEncoder().encode(Envelope(entry: entry, checksum: SHA256.hash(data: body).hexString))
        else { return }
        try? AtomicFile.write(data, to: path(for: stepKey(key)))
    }

    func stepKey(_ key: String) -> String {
        let parts = key.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
        let normalized = Self.keyFlags(parts).map(normalize).joined(separator: "\u{0}")
        return SHA256.hash(data: Data(("nvbuild-step-v2\n" + normalized).utf8)).hexString
    }

    public func store(context: Context, source: String, files: [TestDefinition.AuxiliaryFile], compiled: Bool, diagnostics: String, dependencies: [String]) {
        var deps: [String: String] = [:]
        for dep in dependencies {
            guard let h = hashOfFile(dep) else { return }  // a vanished input: do not cache
            deps[normalize(dep)] = h
        }
        let entry = Entry(compiled: compiled, diagnostics: diagnostics, dependencies: deps, absent: nil)
        guard let body = try? Self.encode(entry),
            let data = try? JSONEncoder().encode(Envelope(entry: entry, checksum: SHA256.hash(data: body).hexString))
        else { return }
        try? AtomicFile.write(data, to: path(for: key(context: context, source: source, files: files)))
    }

    static func encode(_ entry: Entry) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(entry)
    }

    /// Paths listed in a make-style dependency file (`-MD`), excluding the compiled source itself.
    public static func dependencies(fromMakeRule text: String, directory: String) -> [String] {
        let joined = text.replacingOccurrences(of: "\\\n", with: " ")
        guard let colon = joined.range(of: ": ") else { return [] }
        return joined[colon.upperBound...].split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
            .map(String.init)
            .filter { $0 != "conftest.c" }
            .map { $0.hasPrefix("/") ? $0 : directory + "/" + $0 }
    }
}

extension Sequence where Element == UInt8 {
    var hexString: String { map { String(format: "%02x", $0) }.joined() }
}

extension SHA256.Digest {
    var hexString: String { Array(self).hexString }
}
