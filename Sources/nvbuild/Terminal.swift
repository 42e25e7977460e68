import Foundation
import NVBuildSupport

/// The only place that writes to the terminal: colour on a TTY unless NO_COLOR is set.
enum Terminal {
    static let isInteractive: Bool = isatty(STDOUT_FILENO) == 1
    static let errorIsInteractive: Bool = isatty(STDERR_FILENO) == 1
    static let colorAllowed: Bool = ProcessInfo.processInfo.environment["NO_COLOR"].map { $0.isEmpty } ?? true

    enum Style: String {
        case bold = "1", red = "31", green = "32", yellow = "33", dim = "2"
    }

    static func styled(_ text: String, _ style: Style, stderr: Bool = false) -> String {
        guard colorAllowed, stderr ? errorIsInteractive : isInteractive else { return text }
        return "\u{1B}[\(style.rawValue)m\(text)\u{1B}[0m"
    }

    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    /// Writes bytes to stdout unchanged (no newline added, no UTF-8 round trip): bulk output
    /// that must match another tool byte for byte. Returns false when stdout is gone.
    @discardableResult
    static func writeRaw(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(STDOUT_FILENO, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }

    static func error(_ text: String) {
        FileHandle.standardError.write(Data((styled("error:", .red, stderr: true) + " " + escaped(text, keepingNewlines: true) + "\n").utf8))
    }

    static func warning(_ text: String) {
        FileHandle.standardError.write(Data((styled("warning:", .yellow, stderr: true) + " " + escaped(text, keepingNewlines: true) + "\n").utf8))
    }

    /// The one way a library's `Diagnostic` reaches the terminal (text form; `--json`
    /// output encodes the value itself). Always one line: text from input files is escaped.
    static func report(_ diagnostic: Diagnostic) {
        let style: Style = diagnostic.severity == .error ? .red : diagnostic.severity == .warning ? .yellow : .dim
        let text = escaped(diagnostic.locationPrefix) + styled(diagnostic.severity.rawValue + ":", style, stderr: true) + " "
            + escaped(diagnostic.message + diagnostic.remedySuffix)
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// Text from input files (a dkms.conf line, a file name) made safe for a terminal: control
    /// characters, which a terminal would act on (ESC[2J clears it), are shown as escapes
    /// such as `\x1b`; C1 controls (CSI is one) as `\u{9b}`. Tabs stay.
    static func escaped(_ text: String, keepingNewlines: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: { needsEscape($0, keepingNewlines: keepingNewlines) }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            guard needsEscape(scalar, keepingNewlines: keepingNewlines) else {
                out.unicodeScalars.append(scalar)
                continue
            }
            switch scalar.value {
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0..<0x80: out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: out += "\\u{" + String(scalar.value, radix: 16) + "}"
            }
        }
        return out
    }

    private static func needsEscape(_ scalar: Unicode.Scalar, keepingNewlines: Bool) -> Bool {
        switch scalar.value {
        case 0x09: return false
        case 0x0A: return !keepingNewlines
        case 0..<0x20, 0x7F, 0x80...0x9F: return true
        default: return false
        }
    }

    static func note(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// Overwrites the current stderr line (progress bars); a no-op when stderr is not a terminal.
    static func status(_ text: String) {
        guard errorIsInteractive else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
    }

    static func clearStatus() {
        guard errorIsInteractive else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(value)
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}
