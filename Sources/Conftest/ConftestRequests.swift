import Foundation
import NVBuildSupport

/// The conftest requests of an NVIDIA-style driver tree (`kernel-open/`),
/// read the way its Kbuild reads them.
public struct ConftestRequests: Sendable {
    /// The five request lists, each feeding one generated header.
    public enum Header: String, Sendable, CaseIterable, Codable {
        case functions, generic, macros, symbols, types

        /// The Kbuild variable that feeds this header.
        var variable: String {
            switch self {
            case .functions: return "NV_CONFTEST_FUNCTION_COMPILE_TESTS"
            case .generic: return "NV_CONFTEST_GENERIC_COMPILE_TESTS"
            case .macros: return "NV_CONFTEST_MACRO_COMPILE_TESTS"
            case .symbols: return "NV_CONFTEST_SYMBOL_COMPILE_TESTS"
            case .types: return "NV_CONFTEST_TYPE_COMPILE_TESTS"
            }
        }

        public var fileName: String { rawValue + ".h" }
    }

    /// Modules the driver Makefile builds when they exist, in its order.
    public static let knownModules = ["nvidia", "nvidia-uvm", "nvidia-vgpu-vfio", "nvidia-modeset", "nvidia-drm", "nvidia-peermem"]

    public var path: String
    public var modules: [String]
    /// Per header, the requested tests in first-appearance order.
    public var requests: [Header: [String]]
    /// Header paths whose presence the tree tests, in list order.
    public var headerPresenceTests: [String]
    /// Where the tree keeps that list, which also decides the shape of conftest/headers.h.
    public var headerList: HeaderList
    /// `NV_VERSION_STRING` from the tree's Kbuild, when it has one.
    public var driverVersion: String?
    /// The tree's own conftest.sh, used to delegate tests the catalog lacks.
    public var conftestScript: String?
    /// The case arms of that conftest.sh's compile_test; nil when there is no conftest.sh
    /// or it is not shaped like NVIDIA's (the catalog is then matched by name).
    public var arms: ConftestArms?
    /// `patch-*.h` files beside conftest.sh, sorted as the shell's glob sorts them.
    public var patchFiles: [String]
    /// The out-of-tree NVIDIA folder the tree's conftest.sh also reads (its `NVIDIA_OOT_PATH`:
    /// /usr/src/nvidia/nvidia-oot in 580 and 590, nvidia-public from 595, none before):
    /// `<dir>/Module.symvers` for export tests when the folder exists, `-I<dir>/include`
    /// for header presence. Nil when the script names none.
    public var outOfTreeDirectory: String?

    /// Every distinct requested test, in the order the headers first request them.
    public var allTests: [String] {
        var seen = Set<String>()
        var result: [String] = []
        for header in Header.allCases {
            for t in requests[header] ?? [] where seen.insert(t).inserted { result.append(t) }
        }
        return result
    }

    /// Where a tree lists its header-presence tests: NVIDIA's layout changed twice.
    public enum HeaderList: Sendable, Equatable, Codable {
        /// `NV_HEADER_PRESENCE_TESTS` in a file the Kbuild includes (header-presence-tests.mk,
        /// 550.40 on); one `test_kernel_header` call per header, headers.h = the parts + the version line.
        case includedFile(String)
        /// `NV_HEADER_PRESENCE_TESTS` in the Kbuild itself (515.49.18 … 545); same rules.
        case kbuild(String)
        /// `FILES="$FILES …"` lines of conftest.sh's `test_headers` (515.43 … 515.65), which the
        /// Kbuild runs once as `test_kernel_headers`: headers.h is its output alone.
        case conftestScript(String)
        /// The Kbuild tests no headers (a tree that names no list and runs no header test).
        case none

        /// Whether headers.h ends with the uts_release line and is built from per-header parts.
        public var hasParts: Bool {
            if case .conftestScript = self { return false }
            return true
        }
    }

    /// Reads a tree. `modules` and `excluded` mirror NV_KERNEL_MODULES and NV_EXCLUDE_KERNEL_MODULES.
    public static func read(path: String, modules requested: [String]? = nil, excluded: [String] = []) throws -> ConftestRequests {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw UserError(.environment, "\(path): driver tree not found; pass the kernel-open/ directory with --tree")
        }
        guard fm.isReadableFile(atPath: path + "/Kbuild") else {
            throw UserError(.environment, "\(path)/Kbuild: not readable; --tree must name a Kbuild driver tree such as NVIDIA's kernel-open/")
        }
        let kbuild = try TextFile.read(path + "/Kbuild")
        var available = requested ?? knownModules.filter { fm.fileExists(atPath: "\(path)/\($0)") }
        if requested == nil && available.isEmpty {
            // Trees shaped like kernel-open/ but with other module names declare their default list.
            available = MakeSyntax.listValue(of: "NV_KERNEL_MODULES", in: kbuild)
                .filter { fm.fileExists(atPath: "\(path)/\($0)/\($0).Kbuild") }
        }
        let modules = available.filter { !excluded.contains($0) }

        var requests: [Header: [String]] = [:]
        var seen: [Header: Set<String>] = [:]
        for module in modules {
            let fragment = "\(path)/\(module)/\(module).Kbuild"
            guard fm.fileExists(atPath: fragment) else {
                throw UserError(.environment, "\(fragment): missing; module '\(module)' was requested but the tree has no Kbuild fragment for it")
            }
            for (variable, test) in try requestsOf(fragment: fragment, tree: path) {
                guard let header = Header.allCases.first(where: { $0.variable == variable }) else { continue }
                if seen[header, default: []].insert(test).inserted { requests[header, default: []].append(test) }
            }
        }

        let script = path + "/conftest.sh"
        var (headerList, headerTests) = try headerPresenceList(tree: path, kbuild: kbuild, script: script)
        if headerList.hasParts {
            // headers.h is `cat $^` of one part per header: make lists a prerequisite once,
            // so a header named twice (570.x names linux/pfn_t.h twice) gives one line.
            var seen = Set<String>()
            headerTests = headerTests.filter { seen.insert($0).inserted }
        }
        let scriptReadable = fm.isReadableFile(atPath: script)
        // Read once: its case arms and its globals both come from it.
        let scriptBytes = scriptReadable ? try ConftestArms.scriptBytes(path: script) : nil
        if modules.isEmpty == false, requests.values.allSatisfy(\.isEmpty) {
            let fragments = modules.map { "\(path)/\($0)/\($0).Kbuild" }.joined(separator: ", ")
            throw UserError(.environment, "\(fragments): no NV_CONFTEST_*_COMPILE_TESTS requests found; not a Kbuild layout nvbuild can read (it reads 'NV_CONFTEST_…_COMPILE_TESTS += test' lines and the files they 'include $(src)/…')")
        }
        let patches = ((try? fm.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.hasPrefix("patch-") && $0.hasSuffix(".h") }
            .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        return ConftestRequests(
            path: path, modules: modules, requests: requests, headerPresenceTests: headerTests, headerList: headerList,
            driverVersion: versionString(kbuild: kbuild),
            conftestScript: scriptReadable ? script : nil,
            arms: try scriptBytes.flatMap { try ConftestArms.parse($0, path: script) },
            patchFiles: patches,
            outOfTreeDirectory: scriptBytes.flatMap { Self.outOfTreeDirectory(script: String(decoding: $0, as: UTF8.self)) }
        )
    }

    /// The value of the script's top-level `NVIDIA_OOT_PATH=` assignment (quotes removed),
    /// nil without one or when the value is not a plain absolute path.
    static func outOfTreeDirectory(script: String) -> String? {
        for line in script.split(separator: "\n") where line.hasPrefix("NVIDIA_OOT_PATH=") {
            var value = line.dropFirst("NVIDIA_OOT_PATH=".count).trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let quote = value.first, quote == "\"" || quote == "'", value.last == quote {
                value = String(value.dropFirst().dropLast())
            }
            guard value.hasPrefix("/"), !value.contains(where: { "$`\\ ;".contains($0) }) else { return nil }
            return value
        }
        return nil
    }

    /// The header-presence list wherever the tree's Kbuild keeps it (see `HeaderList`).
    /// A list the Kbuild points at but that cannot be read or is empty is an error naming
    /// the file: an empty list would silently give an empty headers.h.
    static func headerPresenceList(tree: String, kbuild: String, script: String) throws -> (HeaderList, [String]) {
        let variable = "NV_HEADER_PRESENCE_TESTS"
        let lines = MakeSyntax.logicalLines(kbuild).map { $0.trimmingCharacters(in: .whitespaces) }
        for line in lines where line.hasPrefix("include ") {
            let target = line.dropFirst("include ".count).trimmingCharacters(in: .whitespaces)
                .replacingOccurrences(of: "$(src)", with: tree)
            // TextFile: a list that is not UTF-8 is named with its byte offset, never skipped.
            guard !target.contains("$"), let text = try TextFile.readIfPresent(target) else {
                if target.hasSuffix("header-presence-tests.mk") {
                    throw UserError(.environment, "\(target): not readable; \(tree)/Kbuild includes it for the header-presence list")
                }
                continue
            }
            guard text.contains(variable) else { continue }
            let list = MakeSyntax.listValue(of: variable, in: text)
            guard !list.isEmpty else {
                throw UserError(.environment, "\(target): \(variable) lists no header; not a header-presence list nvbuild can read ('\(variable) = a.h b.h …')")
            }
            return (.includedFile(target), list)
        }
        if lines.contains(where: { $0.hasPrefix(variable) && !$0.hasPrefix(variable + "_") }) {
            let list = MakeSyntax.listValue(of: variable, in: kbuild)
            guard !list.isEmpty else {
                throw UserError(.environment, "\(tree)/Kbuild: \(variable) lists no header; not a header-presence list nvbuild can read")
            }
            return (.kbuild(tree + "/Kbuild"), list)
        }
        if kbuild.contains("test_kernel_headers") {
            guard let text = try TextFile.readIfPresent(script) else {
                throw UserError(.environment, "\(script): not readable; \(tree)/Kbuild runs its test_kernel_headers for conftest/headers.h")
            }
            let list = scriptHeaderList(text)
            guard !list.isEmpty else {
                throw UserError(.environment, "\(script): no FILES=\"$FILES header\" lines in its test_headers function; not a header list nvbuild can read")
            }
            return (.conftestScript(script), list)
        }
        let code = lines.joined(separator: "\n")
        if code.contains(variable) || code.contains("header-presence") || code.contains("test_kernel_header") {
            throw UserError(.environment, "\(tree)/Kbuild: names header-presence tests but nvbuild finds no list in it, in a file it includes, or in conftest.sh's test_headers; not a layout nvbuild can read")
        }
        return (.none, [])
    }

    /// The headers of conftest.sh's `test_headers` function: `FILES="…"` / `FILES="$FILES …"`
    /// assignments in order (the function passes $FILES to its presence check).
    static func scriptHeaderList(_ text: String) -> [String] {
        var inFunction = false
        var files: [String] = []
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if !inFunction {
                inFunction = raw.hasPrefix("test_headers()")
                continue
            }
            if raw.hasPrefix("}") { break }
            guard line.hasPrefix("FILES=\""), line.hasSuffix("\"") else { continue }
            let value = line.dropFirst("FILES=\"".count).dropLast()
            var words = value.split(separator: " ").map(String.init)
            if words.first == "$FILES" { words.removeFirst() } else { files = [] }
            files += words
        }
        return files
    }

    /// `(variable, test)` pairs of a fragment in file order, following `include $(src)/...` lines.
    static func requestsOf(fragment: String, tree: String, depth: Int = 0) throws -> [(String, String)] {
        guard depth < 8, let text = try TextFile.readIfPresent(fragment) else { return [] }
        var result: [(String, String)] = []
        for line in MakeSyntax.logicalLines(text) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("include ") {
                let target = trimmed.dropFirst("include ".count).trimmingCharacters(in: .whitespaces)
                    .replacingOccurrences(of: "$(src)", with: tree)
                result += try requestsOf(fragment: target, tree: tree, depth: depth + 1)
                continue
            }
            guard trimmed.hasPrefix("NV_CONFTEST_"), let plus = trimmed.range(of: "+=") else { continue }
            let variable = trimmed[..<plus.lowerBound].trimmingCharacters(in: .whitespaces)
            for word in trimmed[plus.upperBound...].split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                result.append((variable, String(word)))
            }
        }
        return result
    }

    static func versionString(kbuild: String) -> String? {
        guard let r = kbuild.range(of: "NV_VERSION_STRING=") else { return nil }
        let rest = kbuild[r.upperBound...].prefix { $0 != "\n" }
        let cleaned = rest.replacingOccurrences(of: "\\\"", with: "").replacingOccurrences(of: "\"", with: "")
            .trimmingCharacters(in: .whitespaces)
        return cleaned.isEmpty ? nil : cleaned
    }

    /// The macro a header-presence test defines: NV_ + path upper-cased, with / . - as _, + _PRESENT.
    public static func presenceMacro(for header: String) -> String {
        let mapped = header.uppercased().map { "/.-".contains($0) ? "_" : String($0) }.joined()
        return "NV_\(mapped)_PRESENT"
    }
}
