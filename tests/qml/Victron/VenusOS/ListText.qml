// Mirrors gui-v2 components/listitems/core/ListText.qml: dataItem (a VeQuickItem), secondaryText.
import QtQuick
import Victron.VenusOS

ListSetting {
	id: root

	readonly property alias dataItem: dataItem
	property string secondaryText: dataItem.valid ? dataItem.value : ""
	property color secondaryTextColor: "#969591"
	_shownText: secondaryText

	VeQuickItem {
		id: dataItem
	}
}
