/*
	dbus-opendtu: status and settings (Settings -> Integrations -> UI Plugins -> dbus-opendtu).

	Every value is read from a D-Bus path that dbus-opendtu's venus_publisher publishes (the acload
	com.victronenergy.acload.http_<n>) or a setting it creates in com.victronenergy.settings; the page
	computes nothing. uids are built from the backend's service uid, so the page works over D-Bus (GX
	screen) and MQTT (browser Remote Console) alike.
*/
pragma ComponentBehavior: Bound

import QtQuick
import Victron.VenusOS

Page {
	id: root

	readonly property string settingsUid: Global.systemSettings.serviceUid
	readonly property string controlUid: settingsUid + "/Settings/DbusOpenDtu/Control"
	// the acload's VRM instance: localsettings keeps it as "acload:<n>" (the user may change it)
	readonly property int acloadInstance: instanceOf(acloadClass.value, "acload")
	readonly property string acloadUid: acloadInstance < 0 ? ""
			: BackendConnection.serviceUidFromName("com.victronenergy.acload.http_" + acloadInstance, acloadInstance)

	function instanceOf(classAndInstance, deviceClass) {
		const parts = (classAndInstance === undefined ? "" : String(classAndInstance)).split(":")
		return parts.length === 2 && parts[0] === deviceClass && /^[0-9]+$/.test(parts[1]) ? parseInt(parts[1]) : -1
	}
	function watts(item) {
		return item.valid ? qsTr("%1 W").arg(Math.round(item.value)) : "--"
	}
	function alarmText(item) {
		if (!item.valid) {
			return qsTr("Unknown")
		}
		return item.value === 0 ? qsTr("OK") : item.value === 1 ? qsTr("Warning") : qsTr("Alarm")
	}
	function acloadPath(path) {
		return root.acloadUid === "" ? "" : root.acloadUid + path
	}

	VeQuickItem {
		id: acloadClass
		uid: root.settingsUid + "/Settings/Devices/dbusopendtu_acload/ClassAndVrmInstance"
	}
	VeQuickItem { id: inverterInstances; uid: root.acloadPath("/Inverters/DeviceInstances") }

	GradientListView {
		model: VisibleItemModel {
			SettingsListHeader {
				text: qsTr("Status")
			}

			ListText {
				objectName: "statusReason"
				text: qsTr("Controller")
				dataItem.uid: root.acloadPath("/Control/Reason")
				secondaryText: dataItem.valid ? "" : qsTr("Not running")
				caption: dataItem.valid ? dataItem.value : ""
			}

			ListText {
				objectName: "statusGrid"
				text: qsTr("Grid power (+ import)")
				dataItem.uid: root.acloadPath("/Ac/Power")
				secondaryText: root.watts(dataItem)
			}

			ListText {
				objectName: "statusOutput"
				text: qsTr("Inverter output")
				dataItem.uid: root.acloadPath("/Control/InverterPower")
				secondaryText: root.watts(dataItem)
			}

			ListText {
				objectName: "statusCap"
				text: qsTr("Cap in force")
				dataItem.uid: root.acloadPath("/Control/Budget")
				secondaryText: root.watts(dataItem)
				caption: !capBy.valid ? ""
						: capBy.value === 0 ? qsTr("Battery state unknown: inverters at their minimum")
						: capBy.value === 1 ? qsTr("Set by: maximum feed-in")
						: capBy.value === 2 ? qsTr("Set by: maximum feed-in minus the balcony system")
						: qsTr("Set by: battery discharge limit (voltage × DCL)")
				VeQuickItem { id: capBy; uid: root.acloadPath("/Control/CapBy") }
			}

			ListText {
				objectName: "statusLimit"
				text: qsTr("Sum of inverter limits")
				dataItem.uid: root.acloadPath("/Control/TotalLimit")
				secondaryText: root.watts(dataItem)
			}

			ListText {
				objectName: "statusGateway"
				text: qsTr("OpenDTU gateway")
				dataItem.uid: root.acloadPath("/Alarms/Dtu")
				secondaryText: root.alarmText(dataItem)
				caption: gatewayHost.valid ? gatewayHost.value : ""
				VeQuickItem { id: gatewayHost; uid: root.acloadPath("/Gateway/Host") }
			}

			ListText {
				objectName: "statusGridMeter"
				text: qsTr("Grid meter")
				dataItem.uid: root.acloadPath("/Alarms/GridMeter")
				secondaryText: root.alarmText(dataItem)
				caption: gridMeterHost.valid ? gridMeterHost.value : ""
				VeQuickItem { id: gridMeterHost; uid: root.acloadPath("/GridMeter/Host") }
			}

			SettingsListHeader {
				text: qsTr("Settings")
			}

			ListSpinBox {
				objectName: "settingMaxFeedIn"
				text: qsTr("Maximum feed-in")
				caption: qsTr("Legal cap for the inverters and a balcony system together")
				dataItem.uid: root.controlUid + "/MaxFeedIn"
				suffix: "W"
				stepSize: 10
				preferredVisible: dataItem.valid
			}

			ListSpinBox {
				objectName: "settingZeroPoint"
				text: qsTr("Zero point")
				caption: qsTr("Grid import to aim for")
				dataItem.uid: root.controlUid + "/ZeroPoint"
				suffix: "W"
				stepSize: 5
				preferredVisible: dataItem.valid
			}

			ListSpinBox {
				objectName: "settingPowerFeedInSoc"
				text: qsTr("Feed-in above SOC")
				caption: qsTr("Above this state of charge, export to the grid is allowed")
				dataItem.uid: root.controlUid + "/PowerFeedInSoc"
				suffix: "%"
				stepSize: 1
				preferredVisible: dataItem.valid
			}

			ListSpinBox {
				objectName: "settingSocFloatingMax"
				text: qsTr("Seasonal SOC maximum")
				caption: qsTr("Moved by the controller over the seasons; set a new start here")
				dataItem.uid: root.controlUid + "/SocFloatingMax"
				suffix: "%"
				stepSize: 1
				preferredVisible: dataItem.valid
			}

			SettingsListHeader {
				text: qsTr("Inverters")
			}

			ListText {
				objectName: "inverterNone"
				text: qsTr("No inverter reported by the gateway yet")
				preferredVisible: inverterList.count === 0
			}

			Column {
				id: inverterList
				objectName: "inverterList"
				readonly property var instances: inverterInstances.valid && String(inverterInstances.value) !== ""
						? String(inverterInstances.value).split(",").map(Number) : []
				readonly property int count: instances.length
				width: parent ? parent.width : 0
				spacing: 4

				Repeater {
					model: inverterList.instances

					ListNavigation {
						id: inverterRow
						required property int modelData
						readonly property string serviceUid: BackendConnection.serviceUidFromName(
								"com.victronenergy.dcload.http_" + modelData, modelData)
						objectName: "inverter" + modelData
						width: inverterList.width
						text: name.valid ? name.value : qsTr("Inverter")
						secondaryText: serial.valid ? serial.value : ""
						onClicked: Global.pageManager.pushPage(Qt.resolvedUrl("PageInverterDbusOpenDtu.qml"),
								{ title: text, serviceUid: serviceUid })

						VeQuickItem { id: name; uid: inverterRow.serviceUid + "/CustomName" }
						VeQuickItem { id: serial; uid: inverterRow.serviceUid + "/Serial" }
					}
				}
			}
		}
	}
}
