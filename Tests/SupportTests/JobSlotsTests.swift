import Foundation
import NVBuildSupport
import Testing

@Suite struct JobSlotsTests {
    final class Tally: @unchecked Sendable {
        private let lock = NSLock()
        private var running = 0
        private(set) var peak = 0
        private(set) var order: [String] = []

        func enter(_ name: String) {
            lock.lock()
            running += 1
            peak = max(peak, running)
            order.append(name)
            lock.unlock()
        }

        func leave() {
            lock.lock()
            running -= 1
            lock.unlock()
        }
    }

    @Test func neverRunsMoreThanItsSlotsAndServesUrgentWorkFirst() async throws {
        let slots = JobSlots(2)
        let tally = Tally()
        await withTaskGroup(of: Void.self) { group in
            // Two long jobs hold both slots while the others queue up.
            for n in 0..<2 {
                group.addTask {
                    await slots.run {
                        tally.enter("hold\(n)")
                        try? await Task.sleep(nanoseconds: 200_000_000)
                        tally.leave()
                    }
                }
            }
            try? await Task.sleep(nanoseconds: 50_000_000)
            for n in 0..<4 {
                group.addTask {
                    await slots.run {
                        tally.enter("normal\(n)")
                        try? await Task.sleep(nanoseconds: 20_000_000)
                        tally.leave()
                    }
                }
            }
            try? await Task.sleep(nanoseconds: 50_000_000)
            group.addTask {
                await slots.run(urgent: true) {
                    tally.enter("urgent")
                    tally.leave()
                }
            }
        }
        #expect(tally.peak == 2)
        #expect(tally.order.count == 7)
        #expect(tally.order.firstIndex(of: "urgent") == 2, "queued urgent work goes before queued normal work: \(tally.order)")
    }
}
