// Mirrors gui-v2 src/backendconnection.{h,cpp}: uidPrefix(), serviceUidForType(), serviceUidFromName().
// The backend type (D-Bus or MQTT) is the test's choice (TestBackend.source).
pragma Singleton
import QtQuick
import VenusTest

QtObject {
	function uidPrefix() {
		return TestBackend.source
	}
	function serviceUidForType(serviceType) {
		return TestBackend.source === "mqtt" ? "mqtt/" + serviceType + "/0"
				: uidPrefix() + "/com.victronenergy." + serviceType
	}
	function serviceUidFromName(serviceName, deviceInstance) {
		if (serviceName === "" || deviceInstance < 0) {
			return ""
		}
		return TestBackend.source === "mqtt"
				? "mqtt/" + serviceName.split(".")[2] + "/" + deviceInstance
				: uidPrefix() + "/" + serviceName
	}
}
