// docs UI
