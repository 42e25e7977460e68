import Foundation
import NVBuildSupport

/// One module a driver tree builds: `name.ko` appears in `location` (relative
/// to the tree; empty for the top level).
public struct ModuleSpec: Sendable, Equatable, Codable {
    public var name: String
    public var location: String
    /// The Kbuild file whose `obj-m` names it, relative to the tree.
    public var kbuildFile: String

    public init(name: String, location: String, kbuildFile: String) {
        self.name = name
        self.location = location
        self.kbuildFile = kbuildFile
    }

    /// Where the built `.ko` lands, relative to the tree.
    public var relativeObjectPath: String { location.isEmpty ? "\(name).ko" : "\(location)/\(name).ko" }
}

/// What a driver tree's Kbuild files say about how to build it. Read from the
/// files; nothing is run.
public struct DriverTree: Sendable, Equatable, Codable {
    public enum Style: String, Sendable, Codable {
        /// A Kbuild/Makefile with `obj-m` lines, built with `make -C <kernel> M=<tree>`.
        case plain
        /// NVIDIA's layout: a Makefile selecting modules through NV_KERNEL_MODULES
        /// and one `<module>/<module>.Kbuild` fragment per module.
        case nvidia
    }

    public var path: String
    public var style: Style
    public var modules: [ModuleSpec]
    /// The tree's Kbuild asks for conftest results (NV_CONFTEST_* lists or a conftest.sh).
    public var requestsConftest: Bool
    /// The tree's build runs a PREEMPT_RT sanity check that rejects RT kernels.
    public var rejectsPreemptRT: Bool

    /// Prebuilt objects the Kbuild files link into modules (`$(src)/nvidia/nv-kernel.o_binary`),
    /// relative to the tree: NVIDIA's binary cores, built by its full tree's make.
    public var binaryCores: [String]

    public var moduleNames: [String] { modules.map(\.name) }

    public init(path: String, style: Style, modules: [ModuleSpec], requestsConftest: Bool, rejectsPreemptRT: Bool,
                binaryCores: [String] = []) {
        self.path = path
        self.style = style
        self.modules = modules
        self.requestsConftest = requestsConftest
        self.rejectsPreemptRT = rejectsPreemptRT
        self.binaryCores = binaryCores
    }

    /// The binary cores the Kbuild links that the tree does not hold: absent, or a link
    /// whose target does not exist (NVIDIA's top-level make links them into `src/…/_out`).
    public func missingBinaryCores() -> [String] {
        binaryCores.filter { core in
            var st = stat()
            return stat("\(path)/\(core)", &st) != 0 || st.st_mode & S_IFMT != S_IFREG
        }
    }

    /// Refuses a Kbuild tree whose binary cores are missing, before anything compiles:
    /// make would only say "No rule to make target" after compiling everything else.
    public func checkBinaryCores() throws(UserError) {
        let missing = missingBinaryCores()
        guard !missing.isEmpty else { return }
        let files = missing.map { "\(path)/\($0)" }.joined(separator: ", ")
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        throw UserError(.environment, "\(files): missing; the tree's Kbuild links \(missing.count == 1 ? "this binary core" : "these binary cores") into its modules. Build the full tree instead (nvbuild build --tree \(parent), the root of open-gpu-kernel-modules, builds the cores once), or place the prebuilt _binary objects there")
    }

    /// `$(src)/PATH.o_binary` words outside comments: the Kbuild's binary objects.
    static func binaryCores(in text: String) -> [String] {
        var cores: [String] = []
        for line in MakeSyntax.logicalLines(text) {
            let code = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            for word in code.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "=" || $0 == ":" }) where word.hasSuffix(".o_binary") {
                guard word.hasPrefix("$(src)/") else { continue }
                let relative = String(word.dropFirst("$(src)/".count))
                if !relative.contains("$"), !relative.contains(".."), !cores.contains(relative) { cores.append(relative) }
            }
        }
        return cores
    }

    public static func load(path: String) throws -> DriverTree {
        let root = URL(fileURLWithPath: path).standardizedFileURL.path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw UserError(.usage, "\(path): not a directory; pass --tree the directory that holds the module's Kbuild or Makefile")
        }
        let makefile = try read(root + "/Makefile")
        let kbuild = try read(root + "/Kbuild")
        guard makefile != nil || kbuild != nil else {
            throw UserError(.usage, "\(root): has neither a Kbuild nor a Makefile; pass --tree the top directory of the module sources")
        }
        if let makefile, makefile.contains("NV_KERNEL_MODULES") {
            return try loadNVIDIA(root: root, makefile: makefile, kbuild: kbuild ?? "")
        }
        var modules: [ModuleSpec] = []
        try collectPlain(root: root, directory: "", into: &modules, depth: 0)
        guard !modules.isEmpty else {
            throw UserError(.usage, "\(root): no `obj-m += <name>.o` line in its Kbuild or Makefile, so there is no module to build")
        }
        let text = (kbuild ?? "") + (makefile ?? "")
        return DriverTree(
            path: root, style: .plain, modules: modules,
            requestsConftest: false, rejectsPreemptRT: text.contains("preempt_rt_sanity_check"))
    }

    private static func loadNVIDIA(root: String, makefile: String, kbuild: String) throws -> DriverTree {
        // The Makefile's default list, in its order: NV_KERNEL_MODULES ?= $(wildcard a b c).
        var candidates: [String] = []
        for line in MakeSyntax.logicalLines(makefile) {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("NV_KERNEL_MODULES"), t.contains("?="), let open = t.range(of: "$(wildcard") else { continue }
            let rest = t[open.upperBound...].prefix { $0 != ")" }
            candidates = rest.split(separator: " ").map(String.init)
        }
        if candidates.isEmpty {
            candidates = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted()
        }
        var modules: [ModuleSpec] = []
        var allText = kbuild
        for name in candidates {
            let fragment = "\(name)/\(name).Kbuild"
            guard let text = try read("\(root)/\(fragment)") else { continue }
            allText += text
            for object in objects(in: text).modules {
                modules.append(ModuleSpec(name: object, location: "", kbuildFile: fragment))
            }
        }
        guard !modules.isEmpty else {
            throw UserError(.usage, "\(root): its Makefile selects modules through NV_KERNEL_MODULES, but no <module>/<module>.Kbuild fragment has an obj-m line")
        }
        let requests = allText.contains("NV_CONFTEST_") || FileManager.default.fileExists(atPath: root + "/conftest.sh")
        return DriverTree(
            path: root, style: .nvidia, modules: modules,
            requestsConftest: requests, rejectsPreemptRT: allText.contains("preempt_rt_sanity_check"),
            binaryCores: binaryCores(in: allText))
    }

    private static func collectPlain(root: String, directory: String, into modules: inout [ModuleSpec], depth: Int) throws {
        guard depth < 8 else { return }
        let base = directory.isEmpty ? root : "\(root)/\(directory)"
        // Kbuild reads Kbuild in preference to Makefile.
        let name = FileManager.default.fileExists(atPath: base + "/Kbuild") ? "Kbuild" : "Makefile"
        guard let text = try read("\(base)/\(name)") else { return }
        let found = objects(in: text)
        for module in found.modules where !modules.contains(where: { $0.name == module && $0.location == directory }) {
            modules.append(ModuleSpec(name: module, location: directory, kbuildFile: directory.isEmpty ? name : "\(directory)/\(name)"))
        }
        for sub in found.subdirectories {
            try collectPlain(root: root, directory: directory.isEmpty ? sub : "\(directory)/\(sub)", into: &modules, depth: depth + 1)
        }
    }

    /// Module names (`foo.o` → foo) and subdirectories (`bar/`) added to `obj-m`.
    static func objects(in text: String) -> (modules: [String], subdirectories: [String]) {
        var modules: [String] = []
        var subdirectories: [String] = []
        for line in MakeSyntax.logicalLines(text) {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("obj-m") else { continue }
            var rest = t.dropFirst(5).drop { $0 == " " || $0 == "\t" }
            if rest.hasPrefix("+=") {
                rest = rest.dropFirst(2)
            } else if rest.hasPrefix(":=") || rest.hasPrefix("=") {
                // A plain assignment replaces what earlier lines added.
                rest = rest.drop { $0 == ":" || $0 == "=" }
                modules.removeAll()
                subdirectories.removeAll()
            } else {
                continue
            }
            for word in rest.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                if word.hasSuffix(".o"), !word.contains("$") {
                    let name = String(word.dropLast(2))
                    if !modules.contains(name) { modules.append(name) }
                } else if word.hasSuffix("/"), !word.contains("$") {
                    subdirectories.append(String(word.dropLast()))
                }
            }
        }
        return (modules, subdirectories)
    }

    /// nil when the file does not exist; one line naming the file (and the offset of a
    /// byte that is not UTF-8) when it cannot be read as text.
    private static func read(_ path: String) throws -> String? {
        try TextFile.readIfPresent(path, kind: .usage)
    }
}

extension DriverTree {
    /// `obj-m` parsing on its own, for tests.
    public static func objectsForTesting(_ text: String) -> (modules: [String], subdirectories: [String]) { objects(in: text) }
}
