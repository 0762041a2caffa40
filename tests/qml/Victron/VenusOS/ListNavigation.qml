// Mirrors gui-v2 components/listitems/core/ListNavigation.qml: secondaryText, signal clicked, click().
import QtQuick
import Victron.VenusOS

ListSetting {
	id: root

	property string secondaryText
	property color secondaryTextColor: "#969591"
	property string iconSource: "qrc:/images/icon_chevron_right_32.svg"

	signal clicked

	function click() {
		if (interactive) {
			clicked()
		}
	}

	interactive: true
	_shownText: secondaryText + "  >"
}
