// Mirrors gui-v2 Global.qml (systemSettings, pageManager: `var` as in gui-v2; int32Max). systemSettings mirrors
// data/SystemSettings.qml (serviceUid, canAccess), pageManager mirrors pages/PageManager.qml (pushPage; each push is
// recorded by the test's backend).
pragma Singleton
import QtQuick
import VenusTest

QtObject {
	readonly property int int32Max: 2147483647
	property var systemSettings: _systemSettings
	property var pageManager: _pageManager

	readonly property QtObject _systemSettings: QtObject {
		readonly property string serviceUid: BackendConnection.serviceUidForType("settings")
		function canAccess(level) {
			return TestBackend.accessLevel >= level
		}
	}

	readonly property QtObject _pageManager: QtObject {
		function pushPage(obj, properties) {
			TestBackend.pushPage(String(obj), properties === undefined ? {} : properties)
		}
	}
}
