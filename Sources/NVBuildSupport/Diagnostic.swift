/// A message a library reports instead of printing; the CLI decides how to show it.
public struct Diagnostic: Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable { case note, warning, error }

    public var severity: Severity
    public var message: String
    /// The file the message is about, when there is one.
    public var file: String?
    public var line: Int?

    public init(_ severity: Severity, _ message: String, file: String? = nil, line: Int? = nil) {
        self.severity = severity
        self.message = message
        self.file = file
        self.line = line
    }

    public var description: String {
        var location = ""
        if let file {
            location = file
            if let line { location += ":\(line)" }
            location += ": "
        }
        return "\(location)\(severity.rawValue): \(message)"
    }
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
