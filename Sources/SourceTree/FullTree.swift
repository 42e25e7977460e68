import Foundation
import NVBuildSupport

/// NVIDIA's whole source package (the root of open-gpu-kernel-modules): the
/// OS-agnostic cores under `src/`, built by their own makefiles with the host
/// compiler and no kernel headers, and the Kbuild tree (`kernel-open/`) that links
/// them into modules as `<module>/<core>.o_binary`.
///
/// Read from the top-level Makefile, whose shape has been the same from 515.43.04
/// to 595.45.04: per core, a variable naming the object
/// (`nv_kernel_o = src/nvidia/$(OUTPUTDIR)/nv-kernel.o`), a rule building it
/// (`$(MAKE) -C src/nvidia`), a variable naming the `_binary` link in the Kbuild
/// tree and a rule linking it to the object; and a `modules` rule descending into
/// the Kbuild tree (`$(MAKE) -C kernel-open modules`).
public struct FullTree: Sendable, Equatable {
    /// One OS-agnostic core: where its makefile is and what it produces.
    public struct Core: Sendable, Equatable, Codable {
        /// The folder `make -C` builds the core in, relative to the root (`src/nvidia`).
        public var makeDirectory: String
        /// The object the core's make writes into its OUTPUTDIR (`nv-kernel.o`).
        public var objectName: String
        /// Where the Kbuild tree expects the core, relative to the Kbuild tree
        /// (`nvidia/nv-kernel.o_binary`): one of `DriverTree.binaryCores`.
        public var binaryPath: String

        public init(makeDirectory: String, objectName: String, binaryPath: String) {
            self.makeDirectory = makeDirectory
            self.objectName = objectName
            self.binaryPath = binaryPath
        }
    }

    /// The package's root (the folder holding the top-level Makefile).
    public var root: String
    /// The Kbuild tree, relative to the root (`kernel-open`).
    public var kbuildDirectory: String
    public var kbuildTree: DriverTree
    public var cores: [Core]

    public var kbuildPath: String { "\(root)/\(kbuildDirectory)" }

    /// The full tree at `path`, or nil when `path` is not one (no top-level Makefile
    /// of that shape): the caller then treats `path` as a Kbuild tree itself.
    /// A Makefile of that shape whose pieces do not fit together is an error naming it.
    public static func detect(path: String) throws -> FullTree? {
        let root = URL(fileURLWithPath: path).standardizedFileURL.path
        let makefilePath = root + "/Makefile"
        guard FileManager.default.fileExists(atPath: makefilePath) else { return nil }
        let text = try TextFile.read(makefilePath)
        let makefile = TopMakefile(text)
        // The Kbuild tree: where `modules` descends.
        guard let kbuildDirectory = makefile.makeDirectories(ofTarget: "modules").first(where: { !$0.contains("$") }),
              FileManager.default.fileExists(atPath: "\(root)/\(kbuildDirectory)/Makefile")
        else { return nil }
        // A tree whose top Makefile builds no core is an ordinary Kbuild tree.
        let linkRules = makefile.rules.filter { rule in
            rule.targets.count == 1 && makefile.expand(rule.targets[0]).hasPrefix(kbuildDirectory + "/")
                && makefile.expand(rule.targets[0]).hasSuffix(".o_binary")
        }
        guard !linkRules.isEmpty else { return nil }
        let kbuildTree = try DriverTree.load(path: "\(root)/\(kbuildDirectory)")
        var cores: [Core] = []
        for rule in linkRules {
            let binary = String(makefile.expand(rule.targets[0]).dropFirst(kbuildDirectory.count + 1))
            guard let prerequisite = rule.prerequisites.first,
                  let objectRule = makefile.rules.first(where: { $0.targets == [prerequisite] }),
                  let directory = objectRule.makeDirectories.first
            else {
                throw UserError(.usage, "\(makefilePath): the rule for \(binary) does not name a core object built by `$(MAKE) -C <folder>`; nvbuild reads NVIDIA's top-level Makefile layout (515 to 595) and cannot build this tree's cores")
            }
            let object = makefile.expand(prerequisite)
            let prefix = "\(directory)/$(OUTPUTDIR)/"
            let raw = makefile.variables[String(prerequisite.dropFirst(2).dropLast())] ?? ""
            guard raw.hasPrefix(prefix), !raw.dropFirst(prefix.count).contains("/") else {
                throw UserError(.usage, "\(makefilePath): the core object \(object) is not of the form \(prefix)<object>; nvbuild cannot tell where the core's make writes it")
            }
            cores.append(Core(makeDirectory: directory, objectName: String(raw.dropFirst(prefix.count)), binaryPath: binary))
        }
        let unknown = Set(kbuildTree.binaryCores).subtracting(cores.map(\.binaryPath))
        guard unknown.isEmpty else {
            throw UserError(.usage, "\(makefilePath): the Kbuild tree links \(unknown.sorted().joined(separator: ", ")), which this Makefile does not build")
        }
        // The Kbuild tree's order, so builds and messages are stable.
        cores.sort { a, b in
            (kbuildTree.binaryCores.firstIndex(of: a.binaryPath) ?? .max) < (kbuildTree.binaryCores.firstIndex(of: b.binaryPath) ?? .max)
        }
        return FullTree(root: root, kbuildDirectory: kbuildDirectory, kbuildTree: kbuildTree, cores: cores)
    }
}

/// The little of a top-level Makefile `FullTree` needs: simple variables and rules.
struct TopMakefile {
    struct Rule {
        var targets: [String]
        var prerequisites: [String]
        var recipe: [String]

        /// Folders of the `$(MAKE) -C <folder>` lines of its recipe.
        var makeDirectories: [String] {
            recipe.compactMap { line in
                let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
                guard let make = words.firstIndex(where: { $0 == "$(MAKE)" || $0 == "make" }),
                      let c = words[make...].firstIndex(of: "-C"), c + 1 < words.count else { return nil }
                return words[c + 1]
            }
        }
    }

    var variables: [String: String] = [:]
    var rules: [Rule] = []

    init(_ text: String) {
        var current: Rule?
        for line in MakeSyntax.logicalLines(text) {
            if line.hasPrefix("\t") {
                current?.recipe.append(line.trimmingCharacters(in: .whitespaces))
                continue
            }
            if let rule = current { rules.append(rule) }
            current = nil
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("include"), !trimmed.hasPrefix("."),
                  !trimmed.hasPrefix("ifeq"), !trimmed.hasPrefix("ifneq"), !trimmed.hasPrefix("ifdef"),
                  !trimmed.hasPrefix("ifndef"), !trimmed.hasPrefix("else"), !trimmed.hasPrefix("endif")
            else { continue }
            if let assignment = Self.assignment(trimmed) {
                variables[assignment.name] = assignment.value
            } else if let colon = trimmed.firstIndex(of: ":") {
                let targets = trimmed[..<colon].split(separator: " ").map(String.init)
                let prerequisites = trimmed[trimmed.index(after: colon)...].split(separator: " ").map(String.init)
                current = Rule(targets: targets, prerequisites: prerequisites, recipe: [])
            }
        }
        if let rule = current { rules.append(rule) }
    }

    /// `NAME = value` (also `:=`, `?=`); a rule's `:` never sits before a `=` without a space.
    static func assignment(_ line: String) -> (name: String, value: String)? {
        guard let equals = line.firstIndex(of: "=") else { return nil }
        var nameEnd = equals
        if nameEnd > line.startIndex, [":", "?", "+"].contains(line[line.index(before: nameEnd)]) {
            nameEnd = line.index(before: nameEnd)
        }
        let name = line[..<nameEnd].trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, !name.contains(" "), !name.contains(":"), !name.contains("$") else { return nil }
        return (name, line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces))
    }

    /// `$(NAME)` replaced by the variable's value (one level, as this Makefile uses them);
    /// `$(OUTPUTDIR)` is left as it is: the core's make decides it.
    func expand(_ word: String) -> String {
        guard word.hasPrefix("$("), word.hasSuffix(")") else { return word }
        let name = String(word.dropFirst(2).dropLast())
        return variables[name] ?? word
    }

    func makeDirectories(ofTarget target: String) -> [String] {
        rules.filter { $0.targets.contains(target) }.flatMap(\.makeDirectories)
    }
}
