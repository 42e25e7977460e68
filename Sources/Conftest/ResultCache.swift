import Crypto
import Foundation
import KernelTree
import NVBuildSupport
import Synchronization

/// A content-addressed store of probe results.
///
/// The key of a compile covers the compiler (binary and version), the full flag
/// list, the source and auxiliary files. Each entry also names a *manifest*: the
/// content hash of every file the compile read (from the compiler's own
/// dependency output). An entry is used only while every file of its manifest is
/// unchanged, and, for results that depend on a header being missing, while those
/// paths stay missing. Many compiles read the same headers, so manifests are
/// shared and each is checked once per run.
///
/// Entries and manifests are written atomically and end with a checksum of their
/// content, which includes the key (or manifest id) the file answers: a truncated or
/// corrupted file, or one copied or moved onto another key's name (a shared or synced
/// cache can do that), is detected and recomputed, never trusted, and concurrent probes
/// sharing a cache never read a half-written file.
public final class ResultCache: Sendable {
    public let directory: String
    /// What one run learns, shared by the probe's concurrent compiles.
    private struct State: Sendable {
        var fileHashes: [String: String?] = [:]
        var manifestVerdicts: [String: Bool] = [:]
        /// Real path prefix → placeholder. Keys and recorded dependency paths are stored
        /// with the kernel and tree locations abstracted, so another ABI of the same kernel
        /// series, or another copy or release of a driver tree, reuses every result whose
        /// inputs have the same content (the dependency hashes decide, never the names).
        var substitutions: [(path: String, placeholder: String)] = []
        var normalizedFlagsMemo: (flags: [String], text: String)?
        var manifestIDs: [[String]: String] = [:]
        /// Path → (stat signature, hash) across runs (the file-index file).
        var statIndex: [String: (signature: String, hash: String)] = [:]
        var statIndexChanged = false
        /// Entries and manifests found corrupt or answering another key than their name says.
        var rejected = 0
    }
    private let state = Mutex(State())
    private var substitutions: [(path: String, placeholder: String)] { state.withLock { $0.substitutions } }

    /// How many entries and manifests this cache refused so far because they were corrupt,
    /// truncated, or sealed for another key than the one their file name stands for. Each
    /// was a miss, recomputed and overwritten.
    public var rejectedEntries: Int { state.withLock { $0.rejected } }

    public struct Context: Sendable {
        public var compiler: CompilerCommand
        public var compilerIdentity: String
        public var flags: [String]
    }

    public init(directory: String) throws {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw UserError.fileSystem(cannot: "create the cache directory", directory, error, remedy: "pick another with --cache-dir or pass --no-cache")
        }
        loadStatIndex()
    }

    /// `--cache-dir`, else NVBUILD_CACHE_DIR, else $XDG_CACHE_HOME/nvbuild, else ~/.cache/nvbuild.
    public static func defaultDirectory(environment: [String: String]) -> String {
        if let d = environment["NVBUILD_CACHE_DIR"], !d.isEmpty { return d }
        if let x = environment["XDG_CACHE_HOME"], !x.isEmpty { return x + "/nvbuild" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.cache/nvbuild"
    }

    /// Sets the locations abstracted in keys; call before the first lookup.
    public func abstract(_ paths: [(path: String, placeholder: String)]) {
        let sorted = paths.filter { !$0.path.isEmpty }.sorted { $0.path.count > $1.path.count }
        state.withLock { $0.substitutions = sorted }
    }

    func normalize(_ text: String) -> String {
        var t = text
        for s in substitutions { t = t.replacingOccurrences(of: s.path, with: s.placeholder) }
        return t
    }

    /// A dependency path with its location abstracted: a prefix replaced, never more.
    func normalizePath(_ path: String) -> String {
        for s in substitutions where path.hasPrefix(s.path) && (path.count == s.path.count || path.dropFirst(s.path.count).first == "/") {
            return s.placeholder + path.dropFirst(s.path.count)
        }
        return path
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

    /// Identifies the real compiler, never a launcher in front of it (`CompilerCommand.identity`):
    /// `ccache gcc-12` and `distcc x86_64-linux-gnu-gcc-12` share gcc-12's results.
    public static func compilerIdentity(_ compiler: CompilerCommand,
                                        environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> String {
        try await compiler.identity(environment: environment)
    }

    // MARK: Keys

    func key(context: Context, source: String, files: [TestDefinition.AuxiliaryFile]) -> String {
        var hasher = SHA256()
        hasher.update(data: Data("nvbuild-compile-v3\n".utf8))
        hasher.update(data: Data(context.compilerIdentity.utf8))
        hasher.update(data: Data(normalizedFlags(context.flags).utf8))
        hasher.update(data: Data(source.utf8))
        for file in files { hasher.update(data: Data((file.name + "\u{0}" + file.content + "\u{0}").utf8)) }
        return hasher.finalize().hexString
    }

    /// The flags as they enter keys, computed once per run.
    func normalizedFlags(_ flags: [String]) -> String {
        if let memo = state.withLock({ $0.normalizedFlagsMemo }), memo.flags == flags { return memo.text }
        let text = Self.keyFlags(flags).map { normalize($0) + "\u{0}" }.joined()
        state.withLock { $0.normalizedFlagsMemo = (flags, text) }
        return text
    }

    func stepKey(_ key: String) -> String {
        let parts = key.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
        let normalized = Self.keyFlags(parts).map(normalize).joined(separator: "\u{0}")
        return SHA256.hash(data: Data(("nvbuild-step-v3\n" + normalized).utf8)).hexString
    }

    private func entryPath(_ key: String) -> String { "\(directory)/\(key.prefix(2))/\(key)" }
    private func manifestPath(_ id: String) -> String { "\(directory)/manifests/\(id.prefix(2))/\(id)" }

    // MARK: Public operations

    public func lookup(context: Context, source: String, files: [TestDefinition.AuxiliaryFile]) -> (compiled: Bool, diagnostics: String)? {
        read(key: key(context: context, source: source, files: files))
    }

    public func store(context: Context, source: String, files: [TestDefinition.AuxiliaryFile], compiled: Bool,
                      diagnostics: String, dependencies: [String], absent: [String] = []) {
        write(key: key(context: context, source: source, files: files), ok: compiled, output: diagnostics,
              dependencies: dependencies, absent: absent)
    }

    /// A cached result of any other step (header presence, sanity compile), under a
    /// key the caller derives from everything the step reads besides `dependencies`.
    public func lookup(step key: String) -> (ok: Bool, output: String)? {
        read(key: stepKey(key))
    }

    public func store(step key: String, ok: Bool, output: String, dependencies: [String], absent: [String] = []) {
        write(key: stepKey(key), ok: ok, output: output, dependencies: dependencies, absent: absent)
    }

    // MARK: Storage

    /// The first line of an entry in the current format; any other is a miss.
    static let entryFormat = "nvbuild-cache 5"
    static let manifestFormat = "nvbuild-manifest 4"
    /// Outcomes one entry keeps. Keys abstract the kernel and tree locations, so one key
    /// serves every kernel and tree whose flags and test text are the same; their headers
    /// differ (6.1 and 6.12), and each outcome holds only while its own manifest does. A
    /// single outcome per key made probes for two kernels evict each other's results.
    static let maxVariants = 8

    /// One outcome of a key: valid while every file of its manifest is unchanged and
    /// every `absent` path (placeholders kept) is still missing.
    struct Variant: Equatable {
        var ok: Bool
        var manifest: String
        var absent: [String]
        var output: String
    }

    /// Entry format (text, one field per line, each output verbatim):
    ///   nvbuild-cache 5 / key <hex> / then per variant, newest first:
    ///   variant / ok 0|1 / manifest <id> / absent <path>... / output <bytes> / <output>
    ///   / checksum <sha256 of all above>
    /// The key line is what binds the entry to its file name: the seal covers it.
    private func write(key: String, ok: Bool, output: String, dependencies: [String], absent: [String]) {
        guard let manifestID = manifest(for: dependencies) else { return }  // an input vanished meanwhile: do not cache
        let new = Variant(ok: ok, manifest: manifestID, absent: absent.map(normalize), output: output)
        var variants = [new]
        // Outcomes for other inputs stay (newest first). Two probes storing one key at
        // the same moment can drop each other's variant: a later miss, never a wrong answer.
        if case .valid(let body) = Self.entryBody(FileManager.default.contents(atPath: entryPath(key)), key: key),
           let stored = Self.variants(parsing: body) {
            for v in stored where variants.count < Self.maxVariants && !(v.manifest == new.manifest && v.absent == new.absent) {
                variants.append(v)
            }
        }
        var body = "\(Self.entryFormat)\nkey \(key)\n"
        for v in variants {
            body += "variant\nok \(v.ok ? 1 : 0)\nmanifest \(v.manifest)\n"
            for a in v.absent { body += "absent \(a)\n" }
            body += "output \(v.output.utf8.count)\n\(v.output)\n"
        }
        // Not fsynced: a torn entry fails its checksum and is a miss, never a wrong answer.
        try? AtomicFile.write(Self.sealed(body), to: entryPath(key), durable: false)
    }

    /// The variants of an entry body (after its format and key lines); nil when it is
    /// sealed but malformed, i.e. written by something else than this cache.
    static func variants(parsing body: String) -> [Variant]? {
        var rest = Substring(body)
        func line() -> Substring? {
            guard let nl = rest.firstIndex(of: "\n") else { return nil }
            defer { rest = rest[rest.index(after: nl)...] }
            return rest[..<nl]
        }
        var variants: [Variant] = []
        while !rest.isEmpty {
            guard line() == "variant", let okLine = line(), okLine == "ok 0" || okLine == "ok 1",
                  let manifestLine = line(), manifestLine.hasPrefix("manifest ")
            else { return nil }
            var absent: [String] = []
            var next = line()
            while let l = next, l.hasPrefix("absent ") {
                absent.append(String(l.dropFirst("absent ".count)))
                next = line()
            }
            guard let outputLine = next, outputLine.hasPrefix("output "), let count = Int(outputLine.dropFirst("output ".count)),
                  count >= 0, let end = rest.utf8.index(rest.utf8.startIndex, offsetBy: count, limitedBy: rest.utf8.endIndex),
                  end < rest.utf8.endIndex, rest.utf8[end] == UInt8(ascii: "\n")
            else { return nil }
            let output = String(decoding: rest.utf8[..<end], as: UTF8.self)
            rest = rest[rest.utf8.index(after: end)...]
            variants.append(Variant(ok: okLine == "ok 1", manifest: String(manifestLine.dropFirst("manifest ".count)),
                                    absent: absent, output: output))
        }
        return variants.isEmpty ? nil : variants
    }

    /// The id of the manifest for a dependency list, written once; many results of one
    /// run share a list (probes with the same includes), so it is computed once per list.
    /// Manifest format: nvbuild-manifest 4 / id <id> / <sha256> <path>... / checksum <sha256 of all above>,
    /// the id being the SHA-256 of the `<sha256> <path>` lines.
    private func manifest(for dependencies: [String]) -> String? {
        let list = Set(dependencies).sorted()
        if let id = state.withLock({ $0.manifestIDs[list] }) { return id }
        var manifest = ""
        for dep in list {
            guard let h = hashOfFile(dep) else { return nil }
            manifest += h + " " + normalizePath(dep) + "\n"
        }
        let id = SHA256.hash(data: Data(manifest.utf8)).hexString
        // Written unless a valid one is there: a file left corrupt or foreign under this
        // id is replaced rather than kept forever.
        if Self.manifestLines(FileManager.default.contents(atPath: manifestPath(id)), id: id) == nil {
            try? AtomicFile.write(Self.sealed("\(Self.manifestFormat)\nid \(id)\n" + manifest), to: manifestPath(id), durable: false)
        }
        state.withLock { $0.manifestIDs[list] = id }
        return id
    }

    /// What a stored file holds, as far as trusting it goes.
    enum Verdict: Equatable {
        /// No file: an ordinary miss.
        case missing
        /// A sound file of an earlier format: a miss, overwritten by this run.
        case obsolete
        /// Corrupt, truncated, or sealed for another key: a miss that is counted.
        case rejected
        case valid(String)
    }

    /// An entry's body after its format and key line, when it is sealed and answers `key`.
    static func entryBody(_ data: Data?, key: String) -> Verdict {
        guard let data else { return .missing }
        guard let body = unsealed(data) else { return .rejected }
        guard body.hasPrefix(entryFormat + "\n") else {
            return body.hasPrefix("nvbuild-cache ") ? .obsolete : .rejected
        }
        let keyLine = "key " + key + "\n"
        let rest = body.dropFirst(entryFormat.count + 1)
        guard rest.hasPrefix(keyLine) else { return .rejected }
        return .valid(String(rest.dropFirst(keyLine.count)))
    }

    /// A manifest's `<sha256> <path>` lines, when it is sealed, names `id` and hashes to it.
    static func manifestLines(_ data: Data?, id: String) -> String? {
        guard case .valid(let lines) = manifestVerdict(data, id: id) else { return nil }
        return lines
    }

    static func manifestVerdict(_ data: Data?, id: String) -> Verdict {
        guard let data else { return .missing }
        guard let body = unsealed(data) else { return .rejected }
        let header = manifestFormat + "\nid " + id + "\n"
        // Earlier formats had no header line (an upgraded cache still holds them): a miss,
        // rewritten by the next store. A current one naming another id was moved here.
        guard body.hasPrefix(header) else { return body.hasPrefix(manifestFormat + "\n") ? .rejected : .obsolete }
        let lines = String(body.dropFirst(header.count))
        guard SHA256.hash(data: Data(lines.utf8)).hexString == id else { return .rejected }
        return .valid(lines)
    }

    private func reject() { state.withLock { $0.rejected += 1 } }

    private func read(key: String) -> (Bool, String)? {
        let body: String
        switch Self.entryBody(FileManager.default.contents(atPath: entryPath(key)), key: key) {
        case .missing, .obsolete: return nil
        case .rejected:
            reject()
            return nil
        case .valid(let b): body = b
        }
        guard let variants = Self.variants(parsing: body) else {
            reject()
            return nil
        }
        for v in variants where manifestValid(v.manifest) && !v.absent.contains(where: { FileManager.default.fileExists(atPath: expand($0)) }) {
            return (v.ok, v.output)
        }
        return nil
    }

    /// Whether every file a manifest lists still has its recorded content; a corrupt or
    /// foreign manifest counts as rejected once per run, a stale one is an ordinary miss.
    private func manifestValid(_ id: String) -> Bool {
        if let v = state.withLock({ $0.manifestVerdicts[id] }) { return v }
        var valid = false
        switch Self.manifestVerdict(FileManager.default.contents(atPath: manifestPath(id)), id: id) {
        case .missing, .obsolete: break
        case .rejected: reject()
        case .valid(let text):
            valid = true
            for entry in text.utf8.split(separator: UInt8(ascii: "\n")) {
                guard entry.count > 65 else { valid = false; break }
                let hash = Substring(entry.prefix(64))
                let path = expand(String(Substring(entry.dropFirst(65))))
                if hashOfFile(path).map({ $0 == hash }) != true {
                    valid = false
                    break
                }
            }
        }
        state.withLock { $0.manifestVerdicts[id] = valid }
        return valid
    }

    /// The file's SHA-256, computed once per run; across runs a file whose inode, size,
    /// mtime and ctime are unchanged keeps its recorded hash (as git's index does), so a
    /// warm probe reads no header at all.
    func hashOfFile(_ path: String) -> String? {
        if let h = state.withLock({ $0.fileHashes[path] }) { return h }
        var st = stat()
        guard stat(path, &st) == 0 else {
            state.withLock { $0.fileHashes[path] = .some(nil) }
            return nil
        }
        let signature = "\(st.st_dev) \(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)"
        let known = state.withLock { $0.statIndex[path] }
        var h: String?
        // A file changed within the last two seconds could change again within the
        // timestamp granularity: hash it, and do not remember it.
        let settled = Double(st.st_mtim.tv_sec) < Date().timeIntervalSince1970 - 2
        if let known, known.signature == signature, settled {
            h = known.hash
        } else {
            h = FileManager.default.contents(atPath: path).map { SHA256.hash(data: $0).hexString }
            if let h, settled {
                state.withLock {
                    $0.statIndex[path] = (signature, h)
                    $0.statIndexChanged = true
                }
            }
        }
        state.withLock { $0.fileHashes[path] = h }
        return h
    }
    private var statIndexPath: String { directory + "/file-index" }

    private func loadStatIndex() {
        guard let text = Self.unsealed(FileManager.default.contents(atPath: statIndexPath)) else { return }
        var index: [String: (signature: String, hash: String)] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t", maxSplits: 2)
            guard fields.count == 3, fields[1].count == 64 else { continue }
            index[String(fields[0])] = (String(fields[2]), String(fields[1]))
        }
        state.withLock { $0.statIndex = index }
    }

    /// Writes the file-hash index back when this run learned something new.
    public func flush() {
        state.withLock { state in
            guard state.statIndexChanged else { return }
            var text = ""
            for (path, entry) in state.statIndex where !path.contains("\t") && !path.contains("\n") {
                text += "\(path)\t\(entry.hash)\t\(entry.signature)\n"
            }
            try? AtomicFile.write(Self.sealed(text), to: statIndexPath, durable: false)
            state.statIndexChanged = false
        }
    }

    /// Appends a checksum line so any truncation or corruption is detected.
    static func sealed(_ body: String) -> Data {
        Data((body + "checksum " + SHA256.hash(data: Data(body.utf8)).hexString + "\n").utf8)
    }

    static func unsealed(_ data: Data?) -> String? {
        guard let data, data.count >= 74 else { return nil }
        let tail = data.suffix(74)  // "checksum " + 64 hex + "\n"
        guard tail.prefix(9) == Data("checksum ".utf8), tail.last == UInt8(ascii: "\n") else { return nil }
        let body = data.prefix(data.count - 74)
        let expected = String(decoding: tail.dropFirst(9).dropLast(), as: UTF8.self)
        guard SHA256.hash(data: body).hexString == expected else { return nil }
        return String(decoding: body, as: UTF8.self)
    }

    /// The inputs a make-style dependency rule (`-M`, `-MD`) lists, as absolute paths,
    /// without the compile's own files in its private `directory` (the source, and a
    /// header `-MG` reports missing, relative to it): those are not inputs to remember.
    public static func dependencies(fromMakeRule text: String, directory: String) -> [String] {
        (prerequisites(ofMakeRule: text) ?? []).filter { $0.hasPrefix("/") && !$0.hasPrefix(directory + "/") }
    }

    /// Everything a make-style rule lists after its target, as written (`-MG` lists a
    /// missing header relative); nil when the text is no rule.
    static func prerequisites(ofMakeRule text: String) -> [String]? {
        let joined = text.replacingOccurrences(of: "\\\n", with: " ")
        guard let colon = joined.range(of: ": ") else { return nil }
        return joined[colon.upperBound...].split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init)
    }
}
