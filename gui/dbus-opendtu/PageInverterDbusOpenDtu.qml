/*
	dbus-opendtu: one inverter (its dcload com.victronenergy.dcload.http_<n>).
*/
import QtQuick
import Victron.VenusOS

Page {
	id: root

	property string serviceUid    // given by pushPage: the dcload's uid in the current backend

	GradientListView {
		model: VisibleItemModel {
			ListTextField {
				objectName: "inverterName"
				text: qsTr("Name")
				dataItem.uid: root.serviceUid + "/CustomName"
				placeholderText: qsTr("Inverter name")
				preferredVisible: dataItem.valid
			}

			ListText {
				objectName: "inverterSerial"
				text: qsTr("Serial number")
				dataItem.uid: root.serviceUid + "/Serial"
			}

			ListText {
				objectName: "inverterPower"
				text: qsTr("AC output")
				dataItem.uid: root.serviceUid + "/Ac/Power"
				secondaryText: dataItem.valid ? qsTr("%1 W").arg(Math.round(dataItem.value)) : "--"
			}

			ListText {
				objectName: "inverterLimit"
				text: qsTr("Limit")
				dataItem.uid: root.serviceUid + "/Limit/Watt"
				secondaryText: dataItem.valid ? qsTr("%1 W").arg(Math.round(dataItem.value)) : "--"
			}

			ListText {
				objectName: "inverterSwitchOff"
				text: qsTr("May be switched off")
				secondaryText: qsTr("config.ini")
				caption: qsTr("Set in config.ini, section [inverter.<serial>], key enable_switch_off (default true: switched off when the cap is below its minimum)")
			}
		}
	}
}
