// Mirrors gui-v2 components/listitems/core/ListTextField.qml: dataItem, secondaryText, placeholderText, echoMode,
// suffix, validateInput, saveInput (default: dataItem.setValue(secondaryText)). gui-v2 validates and saves when the
// text field is accepted or loses focus; enterText() does that here (the test calls it). maximumLength exists only
// from gui-v2 v1.3.5 and is left out on purpose (the plugin targets v1.2.14).
import QtQuick
import Victron.VenusOS

ListSetting {
	id: root

	readonly property alias dataItem: dataItem
	property int inputMethodHints: Qt.ImhNone
	property string secondaryText: dataItem.valid ? dataItem.value : ""
	property string placeholderText
	property int echoMode: TextInput.Normal
	property string suffix
	property var validateInput
	property var saveInput: function() {
		if (dataItem.uid) {
			dataItem.setValue(secondaryText)
		}
	}
	property bool validateOnFocusLost: true

	// stand-in for typing into the field and accepting it
	function enterText(newText) {
		if (!clickable) {
			return false
		}
		secondaryText = newText
		saveInput()
		return true
	}

	interactive: (dataItem.uid === "" || dataItem.valid)
	_shownText: secondaryText.length > 0 ? secondaryText + suffix : placeholderText

	VeQuickItem {
		id: dataItem
	}
}
