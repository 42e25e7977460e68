/// A message a library reports instead of printing; the CLI decides how to show it.
public struct Diagnostic: Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable { case note, warning, error }

    public var severity: Severity
    public var message: String
    /// The file the message is about, when there is one.
    public var file: String?
    public var line: Int?
    /// What the user can do about it, when there is something to do.
    public var remedy: String?

    public init(_ severity: Severity, _ message: String, file: String? = nil, line: Int? = nil, remedy: String? = nil) {
        self.severity = severity
        self.message = message
        self.file = file
        self.line = line
        self.remedy = remedy
    }

    public static func note(_ message: String, file: String? = nil, line: Int? = nil, remedy: String? = nil) -> Diagnostic {
        Diagnostic(.note, message, file: file, line: line, remedy: remedy)
    }

    public static func warning(_ message: String, file: String? = nil, line: Int? = nil, remedy: String? = nil) -> Diagnostic {
        Diagnostic(.warning, message, file: file, line: line, remedy: remedy)
    }

    public static func error(_ message: String, file: String? = nil, line: Int? = nil, remedy: String? = nil) -> Diagnostic {
        Diagnostic(.error, message, file: file, line: line, remedy: remedy)
    }

    /// `file:line: `, `file: ` or nothing: what precedes the severity word.
    public var locationPrefix: String {
        guard let file else { return "" }
        return file + (line.map { ":\($0)" } ?? "") + ": "
    }

    /// ` (remedy)` or nothing: what follows the message.
    public var remedySuffix: String { remedy.map { " (\($0))" } ?? "" }

    public var description: String { "\(locationPrefix)\(severity.rawValue): \(message)\(remedySuffix)" }
}

/// An error meant for the user: one precise sentence naming what is wrong and the remedy.
/// The CLI maps `.environment` / `.usage` to exit status 2 and `.failed` to 1.
public struct UserError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case usage, environment, failed }
    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
