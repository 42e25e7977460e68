import Foundation
import NVBuildSupport

/// One problem found in a dkms.conf: the project's `Diagnostic` (severity,
/// file:line, message, and the fix as its remedy) under a stable rule name.
public struct LintFinding: Sendable, Equatable, Codable, CustomStringConvertible {
    public typealias Severity = Diagnostic.Severity

    /// A short stable name for the rule (`command-substitution`, `index-gap`, ...).
    public var rule: String
    public var diagnostic: Diagnostic

    public init(rule: String, diagnostic: Diagnostic) {
        self.rule = rule
        self.diagnostic = diagnostic
    }

    public var severity: Severity { diagnostic.severity }
    public var file: String { diagnostic.file ?? "" }
    public var line: Int { diagnostic.line ?? 1 }
    public var message: String { diagnostic.message }
    public var fix: String { diagnostic.remedy ?? "" }

    public var description: String {
        "\(file):\(line): \(severity.rawValue): \(message) [\(rule)]\n  fix: \(fix)"
    }

    // JSON: the diagnostic's fields and the rule side by side, as one flat object;
    // `fix` is the remedy under the name `dkms lint --json` used before, kept for readers of it.
    private enum CodingKeys: String, CodingKey { case rule, severity, message, file, line, remedy, fix }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let remedy = try c.decodeIfPresent(String.self, forKey: .remedy) ?? c.decodeIfPresent(String.self, forKey: .fix)
        self.init(
            rule: try c.decode(String.self, forKey: .rule),
            diagnostic: Diagnostic(
                try c.decode(Severity.self, forKey: .severity), try c.decode(String.self, forKey: .message),
                file: try c.decodeIfPresent(String.self, forKey: .file), line: try c.decodeIfPresent(Int.self, forKey: .line),
                remedy: remedy))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rule, forKey: .rule)
        try c.encode(diagnostic.severity, forKey: .severity)
        try c.encode(diagnostic.message, forKey: .message)
        try c.encode(file, forKey: .file)
        try c.encode(line, forKey: .line)
        try c.encodeIfPresent(diagnostic.remedy, forKey: .remedy)
        try c.encode(fix, forKey: .fix)
    }
}

/// What DKMS 3.x reads from dkms.conf, learned from the dkms script's own list
/// of accepted variables and its manual page.
public enum DKMSDirectives {
    /// Directives DKMS reads per module record or per index.
    public static let arrays: Set<String> = [
        "BUILT_MODULE_NAME", "BUILT_MODULE_LOCATION", "DEST_MODULE_NAME", "DEST_MODULE_LOCATION",
        "STRIP", "MAKE", "MAKE_MATCH", "PATCH", "PATCH_MATCH", "BUILD_DEPENDS",
        "MODULES_CONF", "MODULES_CONF_OBSOLETES", "MODULES_CONF_ALIAS_TYPE",
    ]
    public static let scalars: Set<String> = [
        "PACKAGE_NAME", "PACKAGE_VERSION", "CLEAN", "AUTOINSTALL", "NO_WEAK_MODULES",
        "POST_ADD", "POST_BUILD", "POST_INSTALL", "POST_REMOVE", "PRE_BUILD", "PRE_INSTALL",
        "BUILD_EXCLUSIVE_KERNEL", "BUILD_EXCLUSIVE_ARCH", "BUILD_EXCLUSIVE_CONFIG", "OBSOLETE_BY",
        "SIGN_FILE", "MOK_SIGNING_KEY", "MOK_CERTIFICATE", "REMAKE_INITRD", "MODULES_CONF_OBSOLETE_ONLY",
    ]
    /// Still read by old DKMS, ignored by 3.x.
    public static let obsolete: Set<String> = [
        "REMAKE_INITRD", "MODULES_CONF", "MODULES_CONF_OBSOLETES", "MODULES_CONF_ALIAS_TYPE", "MODULES_CONF_OBSOLETE_ONLY",
    ]
    /// The per-module record arrays: DKMS sizes the record list by the longest of them.
    public static let recordArrays = ["BUILT_MODULE_NAME", "BUILT_MODULE_LOCATION", "DEST_MODULE_NAME", "DEST_MODULE_LOCATION"]
    /// Values DKMS later runs through `eval`.
    public static let commands: Set<String> = ["MAKE", "CLEAN"]
    /// Variables DKMS has set when it sources dkms.conf, as its manual documents them.
    public static let variables: Set<String> = [
        "kernelver", "arch", "kernel_source_dir", "kernel_config",
        "dkms_tree", "source_tree", "install_tree", "tmp_location", "module", "module_version",
        // Not in the manual, but set from `dkms -j` (else the CPU count) before dkms.conf is read.
        "parallel_jobs",
    ]

    /// Scripts DKMS runs at a step (`run_build_script` in /usr/sbin/dkms): the value's first
    /// word is a path relative to the package's build/ copy (PRE_BUILD, POST_BUILD) or its
    /// source/ folder (the others); the rest are its arguments.
    public static let hooks: Set<String> = ["PRE_BUILD", "POST_BUILD", "PRE_INSTALL", "POST_INSTALL", "POST_ADD", "POST_REMOVE"]

    public static var all: Set<String> { arrays.union(scalars) }
}

/// Checks a parsed dkms.conf. Pure: reads the model only.
public enum DKMSLinter {
    public static func lint(_ conf: DKMSConf) -> [LintFinding] {
        var findings: [LintFinding] = []
        func add(_ severity: LintFinding.Severity, _ rule: String, _ line: Int, _ message: String, _ fix: String) {
            findings.append(LintFinding(rule: rule, diagnostic: Diagnostic(severity, message, file: conf.path, line: line, remedy: fix)))
        }

        for e in conf.syntaxErrors {
            add(.error, "syntax", e.line, e.reason, "close it; an unterminated quote makes the shell read the rest of the file as one value")
        }
        for s in conf.statements {
            add(
                .error, "not-an-assignment", s.line,
                "`\(s.text)` is not a plain directive assignment (\(s.reason)); DKMS sources dkms.conf with the shell and would run it",
                "remove it; compute values when packaging and write them literally, and put build steps in MAKE[0] or a PRE_BUILD script")
        }

        var defined: Set<String> = DKMSDirectives.variables
        var seen: [String: Int] = [:]
        for a in conf.assignments {
            lintName(a, add)
            lintIndex(a, add)
            lintExpansions(a, defined: defined, add)
            if DKMSDirectives.commands.contains(a.name) { lintEvaluatedText(a, add) }
            let key = "\(a.name)[\(a.indexText ?? "0")]"
            if let previous = seen[key], !a.appends {
                add(.warning, "duplicate", a.line, "\(a.name)\(a.indexText.map { "[\($0)]" } ?? "") is assigned again (first on line \(previous)); the last assignment wins", "keep one assignment")
            }
            seen[key] = seen[key] ?? a.line
            if a.isCompoundArray {
                add(.warning, "compound-array", a.line, "\(a.name)=( ... ) sets several indices at once, which hides gaps and record pairing", "write one \(a.name)[i]=\"...\" line per entry")
            }
            defined.insert(a.name)
        }

        lintRequired(conf, add)
        lintArrays(conf, add)
        lintRecords(conf, add)
        lintMake(conf, add)
        lintValues(conf, add)
        lintHooks(conf, add)
        return findings.sorted { ($0.line, $0.rule) < ($1.line, $1.rule) }
    }

    public static func lint(path: String) throws -> [LintFinding] {
        lint(try DKMSConf.read(path: path))
    }

    typealias Add = (LintFinding.Severity, String, Int, String, String) -> Void

    private static func lintName(_ a: DKMSAssignment, _ add: Add) {
        let known = DKMSDirectives.all
        if known.contains(a.name) {
            if DKMSDirectives.obsolete.contains(a.name) {
                add(.warning, "obsolete", a.line, "\(a.name) is ignored by DKMS 3", "remove it")
            }
            return
        }
        if known.contains(a.name.uppercased()) {
            add(.error, "misspelled-directive", a.line,
                "\(a.name) is not a directive; DKMS reads \(a.name.uppercased()) (names are case-sensitive, and the lower-case name is DKMS's internal copy, which it overwrites)",
                "rename it to \(a.name.uppercased())")
            return
        }
        if let nearest = known.map({ ($0, editDistance(a.name, $0)) }).min(by: { ($0.1, $0.0) < ($1.1, $1.0) }),
            nearest.1 <= max(2, a.name.count / 6)
        {
            add(.error, "misspelled-directive", a.line, "unknown directive \(a.name); DKMS silently ignores it", "did you mean \(nearest.0)?")
            return
        }
        add(.warning, "unknown-directive", a.line, "unknown directive \(a.name); DKMS ignores it (a helper variable still runs through the shell)", "remove it, or write the value it holds into the directives that use it")
    }

    private static func lintIndex(_ a: DKMSAssignment, _ add: Add) {
        guard let indexText = a.indexText else { return }
        guard a.index != nil else {
            add(.error, "non-literal-index", a.line, "\(a.name)[\(indexText)] has an index that is not a plain number; the shell evaluates it as arithmetic, which can run commands", "write the number, e.g. \(a.name)[0]")
            return
        }
        if DKMSDirectives.scalars.contains(a.name), a.index != 0 {
            add(.warning, "index-on-scalar", a.line, "\(a.name) is not an array; DKMS reads only \(a.name) (index 0), so [\(indexText)] is ignored", "write \(a.name)=\"...\"")
        }
    }

    private static func lintExpansions(_ a: DKMSAssignment, defined: Set<String>, _ add: Add) {
        for x in a.expansions {
            switch x.kind {
            case .commandSubstitution, .backtick:
                add(.error, "command-substitution", x.line, "\(a.name) contains the command substitution \(x.text), which runs whenever DKMS reads dkms.conf (add, build, install, status)", "run it once when packaging and write the result literally")
            case .arithmetic:
                add(.error, "arithmetic-expansion", x.line, "\(a.name) contains the arithmetic expansion \(x.text), evaluated whenever DKMS reads dkms.conf", "write the number literally")
            case .parameterOperation(let inner):
                add(.error, "parameter-operation", x.line, "\(a.name) contains \(x.text); `\(inner)` is a shell operation, not one of DKMS's variables", "write the value literally or use a plain DKMS variable such as ${kernelver}")
            case .special(let s):
                add(.error, "unknown-variable", x.line, "\(a.name) expands $\(s), which DKMS does not define for dkms.conf", "write the value literally")
            case .variable(let name):
                if !defined.contains(name) {
                    add(.error, "unknown-variable", x.line, "\(a.name) expands $\(name), which is neither a DKMS variable nor set earlier in this file; its value comes from whatever environment runs dkms", "write the value literally, or use one of DKMS's variables: \(DKMSDirectives.variables.sorted().joined(separator: ", "))")
                }
            }
        }
    }

    /// MAKE and CLEAN are run through `eval`: text that survived sourcing
    /// literally (single quotes, escapes) is expanded again at build time.
    private static func lintEvaluatedText(_ a: DKMSAssignment, _ add: Add) {
        let text = a.literalValue
        for x in evalExpansions(text) {
            switch x.kind {
            case .commandSubstitution, .backtick:
                add(.error, "command-substitution", a.line, "\(a.name) keeps \(x.text) quoted, but DKMS runs \(a.name) through eval, so it runs at build time", "remove it")
            case .variable(let name) where !DKMSDirectives.variables.contains(name) && !DKMSDirectives.all.contains(name):
                add(.warning, "unknown-variable", a.line, "\(a.name) keeps $\(name) for eval at build time; DKMS does not define it", "write the value literally")
            default:
                break
            }
        }
    }

    /// Expansions in literal text as an unquoted shell word would see them.
    static func evalExpansions(_ text: String) -> [ShellExpansion] {
        let cleaned = text.replacingOccurrences(of: String(DKMSConfParser.placeholder), with: "")
        var parser = DKMSConfParser(text: "X=\"" + cleaned.replacingOccurrences(of: "\"", with: "\\\"") + "\"")
        parser.run()
        return parser.assignments.first?.expansions ?? []
    }

    private static func lintRequired(_ conf: DKMSConf, _ add: Add) {
        for name in ["PACKAGE_NAME", "PACKAGE_VERSION"] {
            let value = conf.value(name)
            if value == nil {
                add(.error, "missing-directive", 1, "\(name) is not set; DKMS refuses a dkms.conf without it", "add \(name)=\"...\"")
            } else if value!.isEmpty {
                let line = conf.assignments.last { $0.name == name }?.line ?? 1
                add(.error, "missing-directive", line, "\(name) is empty", "give it a value")
            }
        }
        if !conf.assignments.contains(where: { $0.name == "DEST_MODULE_LOCATION" }) {
            add(.error, "missing-directive", 1, "no DEST_MODULE_LOCATION is set; DKMS 3 rejects the file", "add BUILT_MODULE_NAME[0]=\"<module>\" and DEST_MODULE_LOCATION[0]=\"/updates/dkms\" for every module")
        }
    }

    private static func lintArrays(_ conf: DKMSConf, _ add: Add) {
        var names: [String] = []
        for a in conf.assignments where DKMSDirectives.arrays.contains(a.name) && !names.contains(a.name) { names.append(a.name) }
        for name in names {
            let indices = conf.array(name).keys.sorted()
            guard let last = indices.last, last + 1 != indices.count else { continue }
            let missing = (0...last).filter { !indices.contains($0) }
            let line = conf.assignments.first { $0.name == name && $0.index == last }?.line ?? 1
            add(.error, "index-gap", line,
                "\(name) has \(indices.count) entries but index \(last); \(missing.map { "\(name)[\($0)]" }.joined(separator: ", ")) \(missing.count == 1 ? "is" : "are") missing, and DKMS counts entries, so it reads indices 0–\(indices.count - 1) and never sees \(name)[\(last)]",
                "number the entries 0, 1, 2, ... without gaps")
        }
    }

    private static func lintRecords(_ conf: DKMSConf, _ add: Add) {
        let built = conf.array("BUILT_MODULE_NAME")
        let dest = conf.array("DEST_MODULE_LOCATION")
        let count = DKMSDirectives.recordArrays.map { conf.array($0).count }.max() ?? 0
        func lineOf(_ name: String, _ i: Int) -> Int {
            conf.assignments.first { $0.name == name && $0.index == i }?.line
                ?? conf.assignments.first { DKMSDirectives.recordArrays.contains($0.name) && $0.index == i }?.line
                ?? conf.assignments.last { DKMSDirectives.recordArrays.contains($0.name) }?.line ?? 1
        }
        for i in 0..<count {
            if built[i] == nil, !(dest.count == 1 && i == 0) {
                add(.error, "incomplete-record", lineOf("DEST_MODULE_LOCATION", i), "module record \(i) has no BUILT_MODULE_NAME[\(i)]; DKMS fails with \"No 'BUILT_MODULE_NAME' directive specified for record #\(i)\"", "add BUILT_MODULE_NAME[\(i)]=\"<module name without .ko>\"")
            }
            if dest[i] == nil {
                add(.error, "incomplete-record", lineOf("BUILT_MODULE_NAME", i), "module record \(i) has no DEST_MODULE_LOCATION[\(i)]; DKMS rejects the record", "add DEST_MODULE_LOCATION[\(i)]=\"/updates/dkms\"")
            }
        }
        for name in ["BUILT_MODULE_NAME", "DEST_MODULE_NAME"] {
            for (i, v) in conf.array(name).sorted(by: { $0.key < $1.key }) where v.hasSuffix(".ko") || v.hasSuffix(".o") {
                add(.error, "module-suffix", lineOf(name, i), "\(name)[\(i)]=\"\(v)\" ends in .o or .ko; DKMS adds the suffix itself and rejects this", "write \(v.hasSuffix(".ko") ? String(v.dropLast(3)) : String(v.dropLast(2)))")
            }
        }
        for (i, v) in dest.sorted(by: { $0.key < $1.key }) where !(v.hasPrefix("/kernel") || v.hasPrefix("/updates") || v.hasPrefix("/extra")) {
            add(.error, "dest-location", lineOf("DEST_MODULE_LOCATION", i), "DEST_MODULE_LOCATION[\(i)]=\"\(v)\" does not begin with /kernel, /updates or /extra; DKMS rejects it", "use e.g. /updates/dkms")
        }
    }

    private static func lintMake(_ conf: DKMSConf, _ add: Add) {
        for a in conf.assignments where a.name == "MAKE" {
            let v = a.value
            if v.hasPrefix("make") {
                add(.warning, "make-rewritten", a.line,
                    "MAKE[\(a.indexText ?? "0")] starts with `make`, which DKMS rewrites to `make -j<cpus> KERNELRELEASE=<kernel>`: a Makefile that checks KERNELRELEASE (NVIDIA's does) then behaves as if Kbuild had called it, and it puts its own -j in front of yours",
                    "start the command with 'make' (quoted) so DKMS leaves it alone, and pass the kernel yourself (e.g. KERNEL_UNAME=${kernelver})")
            }
        }
    }

    private static func lintValues(_ conf: DKMSConf, _ add: Add) {
        for a in conf.assignments {
            switch a.name {
            case "AUTOINSTALL" where !["yes", ""].contains(a.value):
                add(.warning, "value", a.line, "AUTOINSTALL=\"\(a.value)\": DKMS only acts on the exact value yes", "write AUTOINSTALL=\"yes\" or remove the line")
            case "STRIP" where !(a.value.first.map { "yYnN".contains($0) } ?? true):
                add(.warning, "value", a.line, "STRIP value \"\(a.value)\" is neither yes nor no; DKMS then falls back to STRIP[0] or yes", "write yes or no")
            case "BUILD_EXCLUSIVE_CONFIG":
                for entry in a.value.split(separator: " ") {
                    let option = entry.hasPrefix("!") ? entry.dropFirst() : entry
                    if !option.hasPrefix("CONFIG_") || !option.allSatisfy({ $0 == "_" || $0.isUppercase || $0.isNumber }) {
                        add(.error, "value", a.line, "BUILD_EXCLUSIVE_CONFIG entry \"\(entry)\" is not a CONFIG_ option name; DKMS greps .config for it literally", "write CONFIG_NAME or !CONFIG_NAME")
                    }
                }
            default:
                break
            }
        }
    }

    /// A hook script must lie inside the package: DKMS prefixes its folder to the path and
    /// runs the result, so `../` climbs out of it into whatever the machine has there, and
    /// an absolute path does not mean what it says.
    private static func lintHooks(_ conf: DKMSConf, _ add: Add) {
        for a in conf.assignments where DKMSDirectives.hooks.contains(a.name) {
            guard let script = a.value.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init) else { continue }
            let folder = a.name.hasSuffix("_BUILD") ? "build" : "source"
            if script.hasPrefix("/") {
                add(.error, "hook-path", a.line,
                    "\(a.name)=\"\(script)\" is an absolute path; DKMS runs \(a.name) as <dkms tree>/<module>/<version>/\(folder)\(script), so it never runs \(script) and depends on what the package holds under that name",
                    "ship the script in the package and name it relative to the package root, e.g. \(a.name)=\"scripts/\(URL(fileURLWithPath: script).lastPathComponent)\"")
            } else if leavesFolder(script) {
                add(.error, "hook-path", a.line,
                    "\(a.name)=\"\(script)\" leaves the package: DKMS runs it from <dkms tree>/<module>/<version>/\(folder)/, and `..` climbs out of that into files the package does not control",
                    "ship the script in the package and name it relative to the package root, without `..`")
            }
        }
    }

    /// Whether a relative path climbs above its starting folder at any point.
    static func leavesFolder(_ path: String) -> Bool {
        var depth = 0
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == ".." {
                depth -= 1
                if depth < 0 { return true }
            } else if part != "." {
                depth += 1
            }
        }
        return false
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let x = Array(a.uppercased()), y = Array(b)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var previous = Array(0...y.count)
        for i in 1...x.count {
            var current = [i] + Array(repeating: 0, count: y.count)
            for j in 1...y.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[y.count]
    }
}
