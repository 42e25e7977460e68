import Dispatch
import Foundation
import Synchronization

/// What SIGINT and SIGTERM do: stop every process nvbuild started, wait for them,
/// run the cleanups registered for work in progress, and exit 128 + the signal.
///
/// Who gets the signal: every process group registered with `track(group:)` (make
/// runs in one of its own, so the terminal's Ctrl-C and a supervisor's group
/// signal reach it only through nvbuild, which then knows to clean up), and every
/// other descendant of nvbuild (the probe's compilers, which stay in nvbuild's own
/// group, so a group signal or SIGKILL from a supervisor reaches them directly).
/// A process is gone when /proc no longer shows it alive (zombies do not count).
/// After `graceSeconds` whatever is left gets SIGKILL; a second signal sends
/// SIGKILL at once.
///
/// Once a signal has arrived no process outcome is reported: `ProcessRunner`
/// refuses to start new processes and throws for ones that ended, so a compile
/// killed by the signal is never taken (or cached) as a compile that failed.
public enum Interruption {
    public static let graceSeconds = 5.0

    private struct State {
        var signal: Int32?
        var sources: [any DispatchSourceSignal] = []
        var groups: Set<pid_t> = []
        var cleanups: [Int: @Sendable () -> String?] = [:]
        var nextToken = 0
    }

    private static let state = Mutex(State())
    private static let queue = DispatchQueue(label: "nvbuild.interruption")

    /// The signal that interrupted this process, once one has.
    public static var received: Int32? { state.withLock { $0.signal } }

    /// Takes over SIGINT and SIGTERM. `stopping` is told when a signal arrives (before
    /// anything is stopped), `stopped` when every process is gone and the cleanups ran,
    /// with what they did; the process then exits 128 + the signal.
    public static func install(
        stopping: @escaping @Sendable (Int32) -> Void,
        stopped: @escaping @Sendable (Int32, [String]) -> Void
    ) {
        state.withLock { state in
            guard state.sources.isEmpty else { return }
            for number in [SIGINT, SIGTERM] {
                // Ignored, so the default action (exit at once) never runs; children get
                // default dispositions back when they are spawned (POSIX_SPAWN_SETSIGDEF).
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler { arrived(number, stopping: stopping, stopped: stopped) }
                source.resume()
                state.sources.append(source)
            }
        }
    }

    private static func arrived(
        _ number: Int32, stopping: @escaping @Sendable (Int32) -> Void, stopped: @escaping @Sendable (Int32, [String]) -> Void
    ) {
        let first = state.withLock { state -> Bool in
            guard state.signal == nil else { return false }
            state.signal = number
            return true
        }
        guard first else {
            signalAll(SIGKILL)
            return
        }
        stopping(number)
        signalAll(number)
        // Waiting happens elsewhere, so a second signal is still heard on `queue`.
        DispatchQueue.global().async {
            if !waitUntilGone(seconds: graceSeconds) {
                signalAll(SIGKILL)
                _ = waitUntilGone(seconds: 2)
            }
            let cleanups = state.withLock { $0.cleanups.sorted { $0.key < $1.key }.map(\.value) }
            let notes = cleanups.compactMap { $0() }
            stopped(number, notes)
            exit(128 + number)
        }
    }

    // MARK: Registration

    /// Registers a process group (a child started as the leader of its own group).
    /// Returns false when a signal has already arrived: the group has then been sent
    /// that signal, and the caller must report nothing from it.
    public static func track(group: pid_t) -> Bool {
        let signal = state.withLock { state -> Int32? in
            state.groups.insert(group)
            return state.signal
        }
        guard let signal else { return true }
        kill(-group, signal)
        return false
    }

    /// The group's leader has ended. Once a signal has arrived the group stays
    /// registered: members the leader left behind must still be waited for.
    public static func untrack(group: pid_t) {
        state.withLock { state in
            if state.signal == nil { state.groups.remove(group) }
        }
    }

    /// Work to do when a signal stops this process, after every child is gone (e.g.
    /// marking a build folder incomplete); returns a line saying what it did, or nil.
    public static func onStop(_ cleanup: @escaping @Sendable () -> String?) -> Int {
        state.withLock { state in
            state.nextToken += 1
            state.cleanups[state.nextToken] = cleanup
            return state.nextToken
        }
    }

    public static func removeOnStop(_ token: Int) {
        _ = state.withLock { $0.cleanups.removeValue(forKey: token) }
    }

    /// Suspends the caller for good: after a signal the handler decides the exit status,
    /// and nothing the main flow would still print (a failed row, a table) is true.
    public static func parkUntilExit() async -> Never {
        while true { try? await Task.sleep(for: .seconds(3600)) }
    }

    // MARK: Processes

    private struct ProcessEntry {
        var pid: pid_t
        var parent: pid_t
        var group: pid_t
        var alive: Bool
    }

    /// Every process /proc shows, from /proc/PID/stat: "pid (comm) state ppid pgrp ...".
    private static func processes() -> [ProcessEntry] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var result: [ProcessEntry] = []
        for name in names {
            guard let pid = pid_t(name), let text = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                let close = text.lastIndex(of: ")")
            else { continue }
            // comm may hold spaces and parentheses; the fields after the last ')' do not.
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count >= 3, let parent = pid_t(fields[1]), let group = pid_t(fields[2]) else { continue }
            result.append(ProcessEntry(pid: pid, parent: parent, group: group, alive: fields[0] != "Z" && fields[0] != "X"))
        }
        return result
    }

    /// Live processes to stop: members of the registered groups and descendants of this process.
    private static func targets() -> (groups: Set<pid_t>, processes: [ProcessEntry]) {
        let groups = state.withLock { $0.groups }
        let all = processes()
        let me = getpid()
        var children: [pid_t: [pid_t]] = [:]
        for p in all { children[p.parent, default: []].append(p.pid) }
        var descendants: Set<pid_t> = []
        var pending = children[me] ?? []
        while let pid = pending.popLast() {
            if descendants.insert(pid).inserted { pending += children[pid] ?? [] }
        }
        let live = all.filter { $0.alive && $0.pid != me && (groups.contains($0.group) || descendants.contains($0.pid)) }
        return (groups, live)
    }

    private static func signalAll(_ number: Int32) {
        let (groups, live) = targets()
        for group in groups { kill(-group, number) }
        for p in live where !groups.contains(p.group) { kill(p.pid, number) }
    }

    /// True when no target is alive within `seconds`.
    private static func waitUntilGone(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if targets().processes.isEmpty { return true }
            if Date() >= deadline { return false }
            usleep(50_000)
        }
    }
}
