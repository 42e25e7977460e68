import Foundation
import NVBuildSupport

/// The conftest/ directory the driver's Kbuild expects, as pure content:
/// same file names, line order and version lines as the Kbuild assembly.
public enum ConftestOutput {
    public static let versionIndent = String(repeating: " ", count: 12)

    public static func versionLine(utsRelease: String) -> String {
        "// Kernel version: " + versionIndent + utsRelease
    }

    /// conftest/headers.h: the header-presence lines in list order, then the version line.
    public static func headersH(_ presence: [ProbeReport.HeaderPresenceResult], utsRelease: String) -> String {
        presence.map { $0.line + "\n" }.joined() + versionLine(utsRelease: utsRelease) + "\n"
    }

    /// Relative path → content, for every file of conftest/.
    public static func files(for report: ProbeReport) -> [(path: String, content: String)] {
        let version = versionLine(utsRelease: report.utsRelease)
        var files: [(String, String)] = [("uts_release", version + "\n")]
        if report.headerList.hasParts {
            for h in report.headerPresence {
                files.append(("header_presence/\(h.header).part", h.line + "\n"))
            }
            files.append(("headers.h", headersH(report.headerPresence, utsRelease: report.utsRelease)))
        } else {
            // Older Kbuilds write headers.h from one `conftest.sh test_kernel_headers` run.
            files.append(("headers.h", report.headerPresence.map { $0.line + "\n" }.joined()))
        }
        var testLines: [String: [String]] = [:]
        for t in report.tests {
            testLines[t.name] = t.lines.map(\.text)
            files.append(("compile-tests/\(t.name).h", t.lines.map { $0.text + "\n" }.joined()))
        }
        for header in ConftestRequests.Header.allCases {
            let names = report.requests[header.rawValue] ?? []
            let body = names.flatMap { testLines[$0] ?? [] }.map { $0 + "\n" }.joined()
            files.append((header.fileName, body + version + "\n"))
        }
        files.append(("patches.h", patches(report.patchFiles)))
        return files
    }

    /// Temporary files a killed probe left behind (`.<name>.tmp-<pid>-<n>`), removed
    /// only when their writer is gone, so a concurrent probe is never disturbed.
    static func removeAbandonedTemporaries(in directory: String) {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return }
        for case let relative as String in walker {
            let name = URL(fileURLWithPath: relative).lastPathComponent
            guard name.hasPrefix("."), let marker = name.range(of: ".tmp-") else { continue }
            let pidText = name[marker.upperBound...].prefix { $0.isNumber }
            guard let pid = Int32(pidText), kill(pid, 0) != 0, errno == ESRCH else { continue }
            try? FileManager.default.removeItem(atPath: directory + "/" + relative)
        }
    }

    /// patch_check's table of applied patch-*.h files.
    static func patches(_ patchFiles: [String]) -> String {
        var text = ""
        for file in patchFiles { text += "#include \"\(file)\"\n" }
        text += """
            static struct {
                            const char *short_description;
                            const char *description;
                          } __nv_patches[] = {

            """
        for file in patchFiles {
            let name = String(file.dropFirst("patch-".count).dropLast(".h".count))
            text += "{ \"\(name)\", NV_PATCH_\(name)_DESCRIPTION },\n"
        }
        text += "{ NULL, NULL } };\n"
        return text
    }

    /// Writes every file atomically, in the order of the Kbuild rules' dependencies
    /// (uts_release, parts, headers.h, compile-tests, the concatenated headers), so
    /// the tree's own make afterwards finds each target newer than its inputs and
    /// runs no conftest at all. An interrupted run leaves each file old or new.
    public static func write(_ report: ProbeReport, to directory: String) throws {
        let all = files(for: report)
        func rank(_ path: String) -> Int {
            if path == "uts_release" { return 0 }
            if path.hasPrefix("header_presence/") { return 1 }
            if path == "headers.h" { return 2 }
            if path.hasPrefix("compile-tests/") { return 3 }
            return 4
        }
        removeAbandonedTemporaries(in: directory)
        // Nothing changed since the last write: leave the files (and their timestamps) alone.
        if all.allSatisfy({ FileManager.default.contents(atPath: directory + "/" + $0.path) == Data($0.content.utf8) }) {
            return
        }
        for (path, content) in all.sorted(by: { rank($0.path) < rank($1.path) }) {
            let full = directory + "/" + path
            do {
                try AtomicFile.write(content, to: full, durable: false)
            } catch {
                throw UserError.fileSystem(cannot: "write", full, error, remedy: "choose a writable --output directory")
            }
        }
    }
}
