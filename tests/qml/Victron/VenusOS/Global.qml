// Mirrors gui-v2 Global.qml (systemSettings, pageManager, int32Max); systemSettings mirrors data/SystemSettings.qml
// (serviceUid, canAccess), pageManager mirrors pages/PageManager.qml (pushPage). Pushed pages are recorded.
pragma Singleton
import QtQuick
import VenusTest

QtObject {
	readonly property int int32Max: 2147483647

	property var systemSettings: QtObject {
		readonly property string serviceUid: BackendConnection.serviceUidForType("settings")
		function canAccess(level) {
			return TestBackend.accessLevel >= level
		}
	}

	property var pageManager: QtObject {
		function pushPage(obj, properties) {
			TestBackend.pushPage(String(obj), properties === undefined ? {} : properties)
		}
	}
}
