# Generated package marker. DO NOT EDIT.
