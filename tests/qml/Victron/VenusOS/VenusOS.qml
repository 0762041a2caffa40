// Mirrors the enums of gui-v2 src/enums.h (class Enums, registered as the VenusOS singleton) that the stand-ins use.
pragma Singleton
import QtQuick

QtObject {
	enum User_AccessType {
		User_AccessType_User = 0,
		User_AccessType_Installer = 1,
		User_AccessType_SuperUser = 2,
		User_AccessType_Service = 3
	}
}
