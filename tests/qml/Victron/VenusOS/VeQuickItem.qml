// Mirrors veutil's VeQuickItem (victronenergy/veutil, branch gui-v2, src/qt/ve_quick_item.hpp): uid, value, valid,
// min, max, defaultValue, setValue(). Values come from the test's backend; min/max are NaN when the backend has
// none (as before GetMin/GetMax answered).
import QtQuick
import VenusTest

QtObject {
	id: root

	property string uid
	property int _revision: 0
	readonly property var value: { _revision; return TestBackend.value(uid) }
	readonly property bool valid: { _revision; return value !== undefined && value !== null }
	readonly property real min: { _revision; return TestBackend.limit(uid, "min") }
	readonly property real max: { _revision; return TestBackend.limit(uid, "max") }
	readonly property var defaultValue: { _revision; return TestBackend.limit(uid, "default") }

	function setValue(newValue) {
		TestBackend.setValue(uid, newValue)
	}

	property Connections _changes: Connections {
		target: TestBackend
		function onChanged(changedUid) {
			if (changedUid === root.uid || changedUid === "") {
				root._revision++
			}
		}
	}
}
